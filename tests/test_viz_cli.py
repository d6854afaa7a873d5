"""``nsfwkit visualize``: outputs and manifests on the real models, clear errors."""

from __future__ import annotations

import json

import pytest

from nsfwkit import cli


def run(argv):
    return cli.main(["visualize", *argv])


FAST = ["--filters", "2", "--steps", "3", "--recipe", "classic", "--score-cam-channels", "16",
        "--channels", "2", "-q"]


def test_default_model_end_to_end(tmp_path, capsys):
    code = run([*FAST, "--layers", "block_2_depthwise_relu", "out_relu", "--out", str(tmp_path)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "filters:" in stdout and "activation:" in stdout
    filters = json.loads((tmp_path / "filters" / "manifest.json").read_text())
    assert filters["model"] == "mobilenet_v2" and filters["recipe"] == "classic"
    assert filters["parameters"]["steps"] == 3
    assert [l["layer"] for l in filters["layers"]] == ["block_2_depthwise_relu", "out_relu"]
    assert all(len(l["filters"]) == 2 for l in filters["layers"])
    for layer in filters["layers"]:
        for f in layer["filters"]:
            assert (tmp_path / "filters" / f["file"]).is_file()
            assert f["activation_reached"] >= 0
    activation = json.loads((tmp_path / "activation" / "manifest.json").read_text())
    assert activation["image"]["source"] == "chelsea.jpg"
    assert activation["top_class"]["name"] == "Neutral"
    assert [c["method"] for c in activation["cams"]] == ["grad_cam", "grad_cam_plus_plus", "score_cam"]
    assert {c["layer"] for c in activation["cams"]} == {"out_relu"}
    assert (tmp_path / "activation" / "cam.png").is_file()
    assert [l["layer"] for l in activation["layers"]] == ["block_2_depthwise_relu", "out_relu"]


def test_one_cam_per_class(tmp_path):
    code = run([*FAST, "--only", "cam", "--cam", "grad_cam", "--class", "all", "--out", str(tmp_path)])
    assert code == 0
    activation = json.loads((tmp_path / "activation" / "manifest.json").read_text())
    assert [c["class_name"] for c in activation["cams"]] == ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"]
    assert activation["layers"] == [] and not (tmp_path / "filters").exists()


def test_non_image_file(tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image\n")
    code = run([*FAST, "--image", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "notes.jpg" in err and "not an image" in err
    assert not (tmp_path / "out").exists()  # failed before any work
    assert run([*FAST, "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")]) == 1
    assert "missing.png — no such file" in capsys.readouterr().err


def test_bad_layer_and_flags(tmp_path, capsys):
    assert run([*FAST, "--layers", "out_rlu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no layer 'out_rlu'" in err and "out_relu" in err
    assert run([*FAST, "--cam-layer", "nope", "--only", "cam", "--out", str(tmp_path)]) == 2
    assert run(["--filters", "0", "--out", str(tmp_path)]) == 2
    assert run([*FAST, "--class", "Kitten", "--only", "cam", "--out", str(tmp_path)]) == 2
    assert "unknown class 'Kitten'" in capsys.readouterr().err
    assert run([*FAST, "--model", "no_such_model", "--out", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_gpu_flag_fails_clearly_without_a_gpu(tmp_path, capsys):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    assert run([*FAST, "--gpu", "--out", str(tmp_path)]) == 2
    assert "sees no GPU" in capsys.readouterr().err


def test_refuses_foreign_out_folder(tmp_path, capsys):
    (tmp_path / "activation").mkdir()
    (tmp_path / "activation" / "keep.txt").write_text("mine")
    assert run([*FAST, "--only", "cam", "--cam", "grad_cam", "--out", str(tmp_path)]) == 2
    assert "not an nsfwkit output folder" in capsys.readouterr().err
    assert (tmp_path / "activation" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_inception_v3(tmp_path):
    code = run([*FAST, "--filters", "1", "--steps", "1", "--model", "inception_v3",
                "--layers", "mixed2", "mixed10", "--out", str(tmp_path)])
    assert code == 0
    activation = json.loads((tmp_path / "activation" / "manifest.json").read_text())
    assert {c["layer"] for c in activation["cams"]} == {"mixed10"}
    filters = json.loads((tmp_path / "filters" / "manifest.json").read_text())
    assert filters["image_size"] == 299 and [l["layer"] for l in filters["layers"]] == ["mixed2", "mixed10"]
