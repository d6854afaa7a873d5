"""``nsfwkit visualize --faithfulness / --sanity / --per-map-scale`` on the hand-set patch model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nsfwkit import cli
from nsfwkit.viz import faithfulness as fa

from viz_helpers import PATCH_W, build_kinked_model, build_patch_model, patch_images

# the .keras file has no spec.json beside it: the kit warns that it assumes raw 0-255 input (it does)
pytestmark = pytest.mark.filterwarnings("ignore:.*no spec file beside it")


def _pixels() -> np.ndarray:
    """The one 8x8 image explained: random 0-100 with the patch at 255, as uint8."""
    return np.rint(patch_images(1)[0]).astype(np.uint8)


def _argv(tmp_path, *flags) -> list[str]:
    """visualize argv on the patch model (with a conv layer, for the CAMs) saved as .keras, and its PNG."""
    model_file, image_file = tmp_path / "patch.keras", tmp_path / "patch.png"
    if not model_file.exists():
        build_patch_model(conv=True).save(model_file)
        Image.fromarray(_pixels()).save(image_file)
    return ["visualize", "--model", str(model_file), "--image", str(image_file), "--only", "cam",
            "--out", str(tmp_path / "out"), "-q", *flags]


def _run(tmp_path, *flags) -> dict:
    assert cli.main(_argv(tmp_path, *flags)) == 0
    return json.loads((tmp_path / "out" / "activation" / "manifest.json").read_text())


def test_faithfulness_and_sanity_in_the_manifest(tmp_path, capsys):
    manifest = _run(tmp_path, "--cam", "gradients", "grad_cam", "layer_cam", "--faithfulness", "--sanity",
                    "--baseline", "black")
    table = capsys.readouterr().out
    block = manifest["faithfulness"]
    assert block["baseline"] == "black" and block["steps"] == 32
    assert block["sanity"]["randomized_layers"] == ["dense"] and block["sanity"]["threshold"] == 0.5
    assert [c["method"] for c in manifest["cams"]] == ["gradients", "grad_cam", "layer_cam"]
    for entry in manifest["cams"]:
        assert entry["class_index"] == 0
        for key in ("deletion_auc", "insertion_auc"):
            assert isinstance(entry[key], float) and 0.0 <= entry[key] <= 1.0
        assert isinstance(entry["flagged"], bool)
        assert entry["rank_correlation"] is None or -1.0 <= entry["rank_correlation"] <= 1.0
        assert entry["flagged"] == (entry["method"] in block["sanity"]["flagged"])
        assert block["scores"][entry["method"]][0]["deletion_auc"] == entry["deletion_auc"]
    # the gradient of a linear model is the oracle map (non-zero on the patch only): it beats a random map
    grads = manifest["cams"][0]
    noise = np.random.default_rng(1).uniform(size=(1, 8, 8)).astype(np.float32)
    random = fa.deletion_insertion(build_patch_model(conv=True), _pixels()[None], noise, baseline="black",
                                   class_index=0)
    assert grads["deletion_auc"] < 0.1 and grads["insertion_auc"] > 0.9
    assert random.deletion_auc[0] - grads["deletion_auc"] > 0.25
    assert grads["insertion_auc"] - random.insertion_auc[0] > 0.25
    # randomising the Dense layer changes the gradient map: not flagged
    assert grads["flagged"] is False and grads["rank_correlation"] < 0.5
    assert "faithfulness (black baseline, 32 steps per curve)" in table
    row = next(line for line in table.splitlines() if line.startswith("gradients"))
    assert f"{grads['deletion_auc']:.3f}" in row and f"{grads['insertion_auc']:.3f}" in row and row.endswith("no")


def test_class_maps_share_a_scale_and_an_empty_map_says_why(tmp_path):
    manifest = _run(tmp_path, "--cam", "gradients", "--class", "all")
    assert "faithfulness" not in manifest and manifest["parameters"]["scale"] == "weighted"
    top, other = manifest["cams"]
    # d logit_0 / dx = 0.01 on the patch (abs max over the channels); logit_1 = 0 has no gradient at all
    assert top["raw_max"] == pytest.approx(PATCH_W) and top["raw_min"] == 0.0 and not top["empty"]
    assert other["raw_max"] == 0.0 and other["empty"]
    assert top["caption"].startswith("class_0 p=1.00, raw [0, 0.01]")
    assert top["caption"].endswith("; evidence × probability")
    assert "empty: the class score has no gradient at the pixels here" in other["caption"]
    heat = np.asarray(Image.open(tmp_path / "out" / "activation" / other["heatmap"]).convert("L"), np.float32)
    assert heat.std() == 0.0  # an empty map is one flat colour (the colormap's zero)
    per_map = _run(tmp_path, "--cam", "gradients", "--class", "all", "--per-map-scale")
    assert per_map["parameters"]["scale"] == "per_map"
    assert all(c["caption"].endswith("; per-map scale") for c in per_map["cams"])


def test_integrated_gradients_completeness_in_the_manifest_and_a_warning(tmp_path, capsys):
    pixels = _pixels()
    mean = float(pixels.astype(np.float64).mean())
    model_file, image_file = tmp_path / "kinked.keras", tmp_path / "kinked.png"
    build_kinked_model(0.75 * mean).save(model_file)
    Image.fromarray(pixels).save(image_file)
    argv = ["visualize", "--model", str(model_file), "--image", str(image_file), "--only", "cam", "-q",
            "--out", str(tmp_path / "out"), "--cam", "integrated_gradients", "grad_cam", "--ig-baseline", "black"]
    # logit_0 = relu(mean - 0.75 mean): the score difference from black is 0.25 mean. One Gauss-Legendre
    # node sits at alpha = 0.5, where 0.5 mean < 0.75 mean: zero gradient, no attribution, 100 % error
    assert cli.main([*argv, "--ig-steps", "1"]) == 0
    ig, grad_cam = json.loads((tmp_path / "out" / "activation" / "manifest.json").read_text())["cams"]
    assert ig["method"] == "integrated_gradients" and ig["class_index"] == 0
    assert ig["score_difference"] == pytest.approx(0.25 * mean, rel=1e-5)
    assert ig["completeness_error"] == pytest.approx(-0.25 * mean, rel=1e-5)
    assert ig["relative_completeness_error"] == pytest.approx(1.0, rel=1e-5)
    assert "completeness_error" not in grad_cam
    assert ("warning: integrated_gradients of class_0: completeness error 100.0% of the score difference "
            "(tolerance 5%): raise steps or use the blur baseline") in capsys.readouterr().err
    # the linear patch model: exact for class 0; class 1 (logit 0) has error 0 over a difference 0: no warning
    cams = _run(tmp_path, "--cam", "integrated_gradients", "--class", "all", "--ig-baseline", "black")["cams"]
    assert cams[0]["relative_completeness_error"] < 1e-5
    assert cams[1]["score_difference"] == 0.0 and cams[1]["completeness_error"] == 0.0
    assert cams[1]["relative_completeness_error"] is None
    assert "warning" not in capsys.readouterr().err


def test_scale_flags_contradicting_each_other(tmp_path, capsys):
    assert cli.main(_argv(tmp_path, "--scale", "shared", "--per-map-scale")) == 2
    assert "--per-map-scale — contradicts --scale shared" in capsys.readouterr().err
    assert cli.main(_argv(tmp_path, "--ig-steps", "0")) == 2
    assert "--ig-steps — must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_faithfulness_flag_errors(tmp_path, capsys):
    assert cli.main(_argv(tmp_path, "--faithfulness", "--faithfulness-steps", "1")) == 2
    assert "--faithfulness-steps" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
