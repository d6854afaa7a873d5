"""nsfwkit.convert without JavaScript: the inference model, the converter import, the export
layout and metadata, the quantisation map, the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from convert_fixtures import (  # noqa: F401  (fixtures)
    build_tiny_model, exported, pretrained, require_converter, tiny_spec,
)
from nsfwkit import convert


def test_converter_import_leaves_no_stand_ins():
    require_converter()
    conversion = convert._import_converter()
    assert hasattr(conversion, "convert_tf_saved_model")
    for name in ("jax", "jax.experimental", "tensorflow_decision_forests"):
        module = sys.modules.get(name)
        # either really installed, or gone again: never a stand-in visible to other code
        assert module is None or "nsfwkit stand-in" not in (module.__doc__ or ""), name


def test_inference_model_removes_augmentation_and_names_input():
    import keras

    model = build_tiny_model(augment=True, input_name=None)
    before = [w.copy() for w in model.get_weights()]
    export = convert.inference_model(model)
    kinds = {type(l).__name__ for l in export.layers}
    nested = {type(l).__name__ for m in export.layers if hasattr(m, "layers") for l in m.layers}
    assert not any(k.startswith("Random") for k in kinds | nested)
    assert export.inputs[0].name == "image"
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(export.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    # the caller's model is untouched
    assert any(isinstance(l, keras.layers.RandomFlip) for l in model.layers)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_inference_model_returns_the_model_itself_when_nothing_to_do():
    model = build_tiny_model()
    assert convert.inference_model(model) is model


def test_unit_range_folds_the_255_into_the_first_rescaling():
    model = build_tiny_model()
    unit = convert.inference_model(model, input_range=(0, 1))
    assert unit.get_layer("rescale_0_255").get_config()["scale"] == pytest.approx(1.0)
    assert model.get_layer("rescale_0_255").get_config()["scale"] == pytest.approx(1 / 255)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(unit.predict(x / 255, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_unit_range_prepends_rescaling_without_a_leading_rescaling():
    import keras

    inputs = keras.Input((8, 8, 3), name="image")
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    unit = convert.inference_model(model, input_range=(0, 1))
    x = np.random.default_rng(2).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(unit.predict(x / 255, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="input_range"):
        convert.inference_model(model, input_range=(-1, 1))


def test_uint8_error_and_quantization_map_by_hand():
    # values spanning [0, 255*s] with s = 0.01 are exactly on the uint8 grid: zero error
    on_grid = np.arange(256, dtype=np.float32) * 0.01
    assert convert._uint8_rel_error(on_grid) == pytest.approx(0.0, abs=1e-6)
    # one big value and many small ones: scale = 100/255 = 0.392, so every 0.1 rounds to 0
    skewed = np.array([100.0] + [0.1] * 2047, np.float32)
    expected = 0.1 * np.sqrt(2047) / np.sqrt(100.0**2 + 2047 * 0.1**2)   # = 0.0451
    assert convert._uint8_rel_error(skewed) == pytest.approx(expected, rel=1e-4)
    weights = {"big_ok": np.tile(on_grid, 8), "big_skewed": skewed, "bias": np.ones(16, np.float32)}
    assert convert._quantization_map(weights, "float32", min_elements=1024, max_uint8_error=0.02) is None
    assert convert._quantization_map(weights, "float16", min_elements=1024, max_uint8_error=0.02) == \
        {"float16": ["big_ok", "big_skewed"]}
    assert convert._quantization_map(weights, "uint8", min_elements=1024, max_uint8_error=0.02) == \
        {"uint8": ["big_ok"], "float16": ["big_skewed"]}


def test_find_node():
    graph = {"modelTopology": {"node": [
        {"name": "image", "op": "Placeholder"},
        {"name": "m/out_relu_1/Const", "op": "Const"},
        {"name": "m/out_relu_1/Relu6", "op": "_FusedConv2D", "input": ["image"]},
        {"name": "m/dense_3_1/BiasAdd", "op": "_FusedMatMul", "input": ["m/out_relu_1/Relu6"]},
        {"name": "m/dense_3_1/Softmax", "op": "Softmax", "input": ["m/dense_3_1/BiasAdd:0"]},
    ]}}
    assert convert.find_node(graph, layer="out_relu") == "m/out_relu_1/Relu6"
    assert convert.find_node(graph, layer="relu") is None  # whole scope names only
    assert convert.find_node(graph, op="Softmax") == "m/dense_3_1/BiasAdd"
    assert convert.find_node(graph, op="Sigmoid") is None


def test_export_layout_metadata_and_sizes(exported, pretrained):
    _, spec = pretrained
    root = exported.out_dir
    assert (root / "saved_model" / "saved_model.pb").is_file()
    assert (root / "spec.json").is_file() and (root / "saved_model" / "spec.json").is_file()
    summary = json.loads((root / "export.json").read_text())
    assert summary["class_names"] == list(spec.class_names)
    for q, folder in exported.tfjs.items():
        meta = convert.read_metadata(folder)
        assert meta["quantization"] == q
        assert meta["class_names"] == list(spec.class_names)
        assert meta["image_size"] == 224 and meta["input_range"] == [0.0, 255.0]
        assert meta["threshold"] == spec.threshold and meta["nsfw_classes"] == list(spec.nsfw_classes)
        assert meta["cam"]["feature_node"].endswith("Relu6") and "out_relu" in meta["cam"]["feature_node"]
        assert "dense_3" in meta["cam"]["logits_node"]
        model_json = json.loads((folder / "model.json").read_text())
        assert list(model_json["signature"]["inputs"]) == ["image"]
    meta = convert.read_metadata(exported.nsfwjs["float32"])
    assert meta["input_range"] == [0.0, 1.0] and meta["nsfwjs_compatible"] is True
    sizes = {(r["format"], r["quantization"]): r["bytes"] for r in exported.sizes}
    f32, f16, u8 = (sizes[("tfjs_graph", q)] for q in ("float32", "float16", "uint8"))
    assert u8 < f16 < f32
    assert f16 < 0.6 * f32 and u8 < 0.4 * f32
    # small tensors stay float32: no quantisation entry on a bias-sized weight
    model_json = json.loads((exported.tfjs["uint8"] / "model.json").read_text())
    weights = [w for g in model_json["weightsManifest"] for w in g["weights"]]
    assert all("quantization" not in w for w in weights if np.prod(w["shape"]) < 1024)
    assert sum("quantization" in w for w in weights) > 30
    fig = convert.plot_sizes(exported.sizes)
    assert len(fig.axes[0].patches) == len(exported.sizes)


def test_export_refuses_a_non_empty_folder(tmp_path):
    require_converter()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="not empty"):
        convert.export(build_tiny_model(), tmp_path / "out", spec=tiny_spec())
    assert (tmp_path / "out" / "mine.txt").read_text() == "user file"


def test_cli_export_tiny_model(tmp_path, capsys):
    require_converter()
    from nsfwkit import cli_convert
    import argparse

    model = build_tiny_model()
    path = tmp_path / "tiny.keras"
    model.save(path)
    tiny_spec().save(tmp_path / "tiny.spec.json")
    parser = argparse.ArgumentParser()
    cli_convert.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", str(path), "--out", str(tmp_path / "exp"), "--quantize", "uint8",
                              "--no-nsfwjs"])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert "tfjs/uint8" in out.out
    assert (tmp_path / "exp" / "tfjs" / "uint8" / "model.json").is_file()
    assert not (tmp_path / "exp" / "tfjs" / "float32").exists()   # reference made in scratch
    assert not (tmp_path / "exp" / "nsfwjs").exists()
    assert [p.name for p in (tmp_path / "exp").iterdir() if p.name.startswith(".")] == []
    # a second run without --overwrite is a usage error, and leaves the export alone
    assert args.func(args) == 2
    assert "exists" in capsys.readouterr().err
