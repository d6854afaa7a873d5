"""Internal activations, the output folders and their manifests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nsfwkit import fileio
from nsfwkit.viz import activations as act
from nsfwkit.viz import cam, filters, outputs
from nsfwkit.viz.layers import LayerNotFoundError

from viz_helpers import TINY_X


def test_one_pass_returns_layers_and_prediction(tiny_model):
    result = act.activations(tiny_model, np.stack([TINY_X, 2 * TINY_X]), layers=["conv", "gap"])
    assert list(result.layers) == ["conv", "gap"]
    np.testing.assert_allclose(result.layers["conv"][0], TINY_X, atol=1e-6)  # identity conv
    np.testing.assert_allclose(result.layers["gap"][1], 2 * TINY_X.mean(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(result.probabilities, tiny_model(np.stack([TINY_X, 2 * TINY_X])).numpy(), rtol=1e-6)


def test_default_model_activations(default_model, cat_image):
    model, _ = default_model
    result = act.activations(model, cat_image)
    assert list(result.layers) == filters.default_filter_layers(model)
    assert result.layers["out_relu"].shape == (1, 7, 7, 1280)
    np.testing.assert_allclose(result.probabilities, model(cat_image[None]).numpy(), atol=1e-5)
    top = act.most_active_channels(result.layers["out_relu"][0], count=5)
    means = result.layers["out_relu"][0].mean(axis=(0, 1))
    assert means[top[0]] == means.max() and list(means[top]) == sorted(means[top], reverse=True)


def test_nested_and_errors(nested_model):
    x = np.zeros((1, 64, 64, 3), np.float32)
    result = act.activations(nested_model, x, layers="mobilenetv2_0.35_64/block_1_expand_relu")
    assert result.layers["mobilenetv2_0.35_64/block_1_expand_relu"].shape == (1, 32, 32, 48)
    with pytest.raises(LayerNotFoundError, match="no layer 'block_99'"):
        act.activations(nested_model, x, layers=["block_99"])
    with pytest.raises(ValueError, match="shape"):
        act.activations(nested_model, np.zeros((64, 3)))


def test_images_helpers():
    maps = np.zeros((7, 7, 3), np.float32)
    maps[2, 3, 1] = 5.0
    img = act.channel_image(maps[..., 1])
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    assert len(np.unique(act.channel_image(maps[..., 0]).reshape(-1, 3), axis=0)) == 1  # flat: one colour
    assert act.most_active_channels(maps, count=2).tolist() == [1, 0]
    g = act.activation_grid(maps, channels=3, columns=3)
    assert g.dtype == np.uint8 and g.shape[1] > g.shape[0]


def test_write_activation_folder(tmp_path, branching_model):
    x = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    a = act.activations(branching_model, x, layers=["stem", "mixed"])
    cams = [cam.compute_cam(branching_model, x, method=m) for m in ("grad_cam", "score_cam")]
    out = tmp_path / "activation"
    manifest_path = outputs.write_activation(
        out, model_name="branching", image=x, class_names=["a", "b", "c"],
        probabilities=a.probabilities[0], source="/some/where/pic.png", activations=a, cams=cams,
        channels=2, most_active=2, parameters={"note": 1},
    )
    manifest = json.loads(manifest_path.read_text())
    assert manifest["schema"] == "nsfwkit.activation/1"
    assert manifest["image"] == {"source": "pic.png", "file": "input.png", "width": 16, "height": 16}
    assert [l["layer"] for l in manifest["layers"]] == ["stem", "mixed"]
    assert manifest["layers"][1]["shape"] == [8, 8, 6]
    assert [c["method"] for c in manifest["cams"]] == ["grad_cam", "score_cam"]
    assert manifest["cam"] == "cam.png" and manifest["parameters"]["note"] == 1
    files = {e["file"] for l in manifest["layers"] for e in l["channels"] + l["most_active"]}
    files |= {l["grid"] for l in manifest["layers"]} | {"input.png", "cam.png"}
    files |= {c[k] for c in manifest["cams"] for k in ("heatmap", "overlay")}
    assert files | {"manifest.json", fileio.OWNER_MARKER, fileio.LOCK_FILE} == {p.name for p in out.iterdir()}
    from PIL import Image

    for name in files:
        with Image.open(out / name) as im:
            assert im.format == "PNG"


def test_rerun_replaces_outputs_cleanly(tmp_path, branching_model):
    results = filters.visualize_filters(branching_model, ["stem", "mixed"], filters=2, recipe="classic", steps=2)
    out = tmp_path / "filters"
    manifest = json.loads(outputs.write_filters(results, out, model_name="b", parameters={"x": 1}).read_text())
    assert manifest["schema"] == "nsfwkit.filters/1" and manifest["recipe"] == "classic"
    entry = manifest["layers"][0]["filters"][0]
    assert set(entry) >= {"layer", "index", "file", "activation_start", "activation_reached", "gain"}
    assert len(list(out.glob("*.png"))) == 2 * 2 + 2
    # a second run with one layer leaves no stale file and no staging folder
    outputs.write_filters(results[1:], out, model_name="b")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".nsfwkit")) == [
        "manifest.json", "mixed_0.png", "mixed_1.png", "mixed_grid.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["filters"]
    assert fileio.folder_kind(out) == "viz"


def test_rerun_keeps_the_users_files_in_a_kit_or_older_kit_folder(tmp_path, branching_model):
    results = filters.visualize_filters(branching_model, ["stem"], filters=1, recipe="classic", steps=1)
    out = tmp_path / "filters"
    outputs.write_filters(results, out, model_name="b")
    (out / "my_notes.md").write_text("mine")
    outputs.write_filters(results, out, model_name="b")
    assert (out / "my_notes.md").read_text() == "mine"
    # an older kit's folder (an nsfwkit manifest, no marker): only the files its manifest names go
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"schema": "nsfwkit.filters/1", "layers": [
        {"grid": "gone_grid.png", "filters": [{"file": "gone_0.png"}]}], "image": {"source": "mine.png"}}))
    for name in ("gone_grid.png", "gone_0.png", "mine.png", "my_notes.md"):
        (old / name).write_bytes(name.encode())
    outputs.write_filters(results, old, model_name="b")
    assert (old / "my_notes.md").read_bytes() == b"my_notes.md" and (old / "mine.png").read_bytes() == b"mine.png"
    assert not (old / "gone_grid.png").exists() and not (old / "gone_0.png").exists()
    assert outputs.read_manifest(old)["model"] == "b"


def test_refuses_to_replace_a_foreign_folder(tmp_path, branching_model):
    results = filters.visualize_filters(branching_model, ["stem"], filters=1, recipe="classic", steps=1)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not an nsfwkit output folder"):
        outputs.write_filters(results, foreign, model_name="b")
    assert (foreign / "thesis.txt").read_text() == "precious"


def test_failed_write_keeps_the_previous_run(tmp_path, branching_model, monkeypatch):
    results = filters.visualize_filters(branching_model, ["stem"], filters=1, recipe="classic", steps=1)
    out = tmp_path / "filters"
    outputs.write_filters(results, out, model_name="first")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outputs, "atomic_write_json", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        outputs.write_filters(results, out, model_name="second")
    assert outputs.read_manifest(out)["model"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["filters"]


def test_atomic_json_and_names(tmp_path):
    path = outputs.atomic_write_json(tmp_path / "a" / "m.json", {"x": np.float32(1.5), "y": np.inf, "z": np.arange(2)})
    assert json.loads(path.read_text()) == {"x": 1.5, "y": None, "z": [0, 1]}
    assert outputs.safe_name("backbone/block 1:relu") == "backbone__block_1_relu"


def test_plot_helpers(tmp_path, tiny_model, branching_model):
    from matplotlib.figure import Figure

    from nsfwkit.viz import plot

    result = act.activations(tiny_model, TINY_X * 60, layers=["conv"])
    fig = plot.plot_most_active(np.full((4, 4, 3), 128.0), result, count=1)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    # TINY_X channel means: 19/16 (channel 0) > 17/16 (channel 1)
    assert fig.axes[1].get_title() == "conv: the 1 most active channels (0)"
    results = filters.visualize_filters(branching_model, ["stem", "mixed"], filters=2, recipe="classic", steps=1)
    fig = plot.plot_filters(results, labels=["first", "second"])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["first", "second"]
    assert [t.get_text() for ax in plot.plot_filters(results).axes for t in ax.texts] == ["stem", "mixed"]
    with pytest.raises(ValueError, match="1 entries for 2 results"):
        plot.plot_filters(results, labels=["one"])
    path = plot.save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["f.png"]


def _three_images():
    """Scaled copies of TINY_X: at the identity "conv", channel c's mean on image i is k_i * mean(TINY_X[..., c])."""
    return np.stack([1.0 * TINY_X, 3.0 * TINY_X, 3.0 * TINY_X[..., ::-1]]).astype(np.float32)


def test_channel_means_hand_computed(tiny_model):
    images = _three_images()
    m0, m1 = TINY_X[..., 0].mean(), TINY_X[..., 1].mean()  # 19/16 and 17/16
    expected = np.array([[m0, m1], [3 * m0, 3 * m1], [3 * m1, 3 * m0]], np.float32)
    np.testing.assert_allclose(act.channel_means(tiny_model, images, layer="conv"), expected, rtol=1e-6)
    # a list of images of any size is accepted (each resized to the model's input)
    listed = act.channel_means(tiny_model, list(images), layer="conv", batch_size=2)
    np.testing.assert_allclose(listed, expected, rtol=1e-6)


def test_top_activating_examples_hand_computed(tiny_model):
    images = _three_images()
    top = act.top_activating_examples(tiny_model, images, layer="conv", channel=0, count=2)
    # channel 0: image 1 has 3*19/16, image 2 has 3*17/16, image 0 has 19/16
    assert top.indices.tolist() == [1, 2] and top.layer == "conv" and top.channel == 0
    np.testing.assert_allclose(top.scores, [3 * 19 / 16, 3 * 17 / 16], rtol=1e-6)
    np.testing.assert_allclose(top.maps, [3 * TINY_X[..., 0], 3 * TINY_X[..., 1]], atol=1e-5)
    # precomputed means serve any channel without a full pass; ties keep the images' order
    means = np.array([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]], np.float32)
    again = act.top_activating_examples(tiny_model, images, layer="conv", channel=0, count=5, means=means)
    assert again.indices.tolist() == [1, 2, 0] and again.maps.shape == (3, 4, 4)


def test_top_activating_examples_errors(tiny_model):
    images = _three_images()
    with pytest.raises(ValueError, match="out of range"):
        act.top_activating_examples(tiny_model, images, layer="conv", channel=2)
    with pytest.raises(ValueError, match="means has shape"):
        act.top_activating_examples(tiny_model, images, layer="conv", channel=0, means=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        act.channel_means(tiny_model, images[:0], layer="conv")
    with pytest.raises(ValueError, match="4-D feature map"):
        act.channel_means(tiny_model, images, layer="gap")
    with pytest.raises(LayerNotFoundError):
        act.channel_means(tiny_model, images, layer="nope")
