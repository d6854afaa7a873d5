"""nsfwkit.convert without JavaScript: the inference model, the converter import, the export
layout and metadata, the quantisation map, the CLI."""

from __future__ import annotations

import json
import os
import stat
import sys

import numpy as np
import pytest

from nsfwkit import convert, fileio

from convert_helpers import build_tiny_model, require_converter, tiny_spec


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


def test_dequantize_like_tfjs_by_hand():
    require_converter()
    convert._import_converter()
    # [-1, 1.55]: scale = 2.55/255 = 0.01; zero is on the grid (nudged min = -1.0)
    values = np.array([-1.0, 0.0, 0.004, 0.006, 1.55, 0.333], np.float32)
    out = convert._dequantize_like_tfjs(values, "uint8")
    np.testing.assert_allclose(out, [-1.0, 0.0, 0.0, 0.01, 1.55, 0.33], atol=1e-6)
    assert out[1] == 0.0                       # zero stays exactly zero
    # float16: 1 + 2**-12 is below half an ulp of float16 at 1 (2**-11): rounds to 1
    f16 = convert._dequantize_like_tfjs(np.array([1 + 2**-12, 1 + 2**-10, 3.0], np.float32), "float16")
    np.testing.assert_array_equal(f16, [1.0, 1 + 2**-10, 3.0])
    np.testing.assert_array_equal(convert._dequantize_like_tfjs(values, "float32"), values)
    assert convert._fnmatch_escape("a/b[1]*?") == "a/b[[]1][*][?]"


@pytest.fixture(scope="module")
def tiny_planner(tmp_path_factory):
    """A precision planner on the float32 TF.js conversion of the tiny BN convnet."""
    require_converter()
    root = tmp_path_factory.mktemp("plan")
    model = build_tiny_model()
    convert.export_saved_model(model, root / "sm")
    convert.export_tfjs(root / "sm", root / "f32", spec=tiny_spec())
    planner = convert._PrecisionPlanner(root / "f32", input_range=(0.0, 255.0))
    yield model, planner
    planner.close()


def test_graph_emulator_equals_keras_and_its_gradients_are_first_order(tiny_planner):
    model, planner = tiny_planner
    em = planner.emulator
    assert em.differentiable and em.softmax
    # the emulated float32 graph model (BN folded, ops unfused) computes the Keras model
    x = planner.images[:6]
    z, p = em.run(x)
    np.testing.assert_allclose(p, model.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(-1, keepdims=True), p, atol=1e-6)
    # <dz/dw, dw> predicts the real change for a small perturbation of the conv kernel
    name = next(n for n in em.names if "conv" in n and em.weights[n].ndim == 4)
    delta = {n: np.zeros_like(v) for n, v in em.weights.items()}
    delta[name] = np.random.default_rng(0).normal(0, 1e-3, em.weights[name].shape).astype(np.float32)
    linear = em.linear_changes(x, {"d": delta})["d"]
    real = em.run(x, {name: em.weights[name] + delta[name]})[0] - z
    k = em.names.index(name)
    np.testing.assert_allclose(linear[k], real, atol=2e-5 + 0.05 * np.abs(real).max())
    assert np.abs(real).max() > 1e-4            # the check has teeth
    assert np.all(np.delete(linear, k, axis=0) == 0)   # zero delta elsewhere


def test_precision_plan_meets_its_target_with_the_cheapest_levels(tiny_planner):
    _, planner = tiny_planner
    names = planner.emulator.names
    # a loose target: everything at the cheapest level
    qmap, info = planner.plan("uint8", target=1.0)
    assert qmap == {"uint8": [convert._fnmatch_escape(n) for n in names]}
    assert info["tensors"] == {"uint8": len(names), "float16": 0, "float32": 0}
    # an impossible target: float32 for every tensor that quantisation would change; the
    # rest (here the scalar Rescaling constants, exact in uint8 as min == max) stay uint8
    qmap, info = planner.plan("uint8", target=0.0)
    lossless = {n for n, v in planner.emulator.weights.items()
                if np.array_equal(convert._dequantize_like_tfjs(v, "uint8"), v)}
    assert 0 < len(lossless) < len(names)
    assert {n for n, d in info["levels"].items() if d != "float32"} == lossless
    assert info["calibration_bound"] == 0.0
    # in between: the measured (emulated) error meets the target, and the plan is cheaper than
    # keeping everything at float32
    full = planner.measure({n: "uint8" for n in names})["bound"]
    assert full > 0
    target = full / 4
    qmap, info = planner.plan("uint8", target=target)
    assert info["calibration_bound"] <= target
    assert planner.measure(info["levels"])["bound"] <= target
    assert info["weight_bytes"] < info["weight_bytes_all_float32"]
    assert set(info["levels"].values()) <= {"uint8", "float16", "float32"}
    qmap, info = planner.plan("float16", target=1e-6)
    assert set(info["levels"].values()) <= {"float16", "float32"}
    assert info["calibration_bound"] <= 1e-6


def test_calibration_images_are_not_the_test_images():
    from nsfwkit import images as nsfw_images
    from nsfwkit import samples

    calib = convert._calibration_images(32)
    assert calib.shape[1:] == (32, 32, 3) and calib.dtype == np.float32 and len(calib) >= 16
    assert 0 <= calib.min() and calib.max() <= 255
    for name, img in samples.sample_images().items():
        test = nsfw_images.resize(img, 32)
        assert np.abs(calib - test).reshape(len(calib), -1).max(1).min() > 1, name


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


def test_export_layout_metadata_and_sizes(exported, default_model):
    _, spec = default_model
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
    # measured on this model: f16 0.72, u8 0.50 of float32 (all-float16 would be 0.50 and
    # all-uint8 0.25, but they move probabilities by 1e-2 / 0.2: see convert's docs)
    assert f16 < 0.8 * f32 and u8 < 0.6 * f32
    # the composition is shown: tensors and bytes per stored dtype, read from model.json
    rows = {(r["format"], r["quantization"]): r for r in exported.sizes}
    for q in ("float16", "uint8"):
        row = rows[("tfjs_graph", q)]
        plan = exported.precision["tfjs"][q]
        assert {d: n for d, n in row["tensors"].items() if d in plan["tensors"]} == \
            {d: n for d, n in plan["tensors"].items() if n}
        assert {d: b for d, b in row["weight_bytes"].items() if d in plan["bytes"]} == \
            {d: b for d, b in plan["bytes"].items() if b}
        assert sum(plan["bytes"].values()) == plan["weight_bytes"]
        assert row["stored_as"].startswith(("f32", "f16", "u8")) and "f32" in row["stored_as"]
    assert rows[("tfjs_graph", "float32")]["stored_as"].startswith("f32 ")
    assert summary["sizes"] == exported.sizes and summary["precision_plan"] == "measured"
    # the weights' storage is the recorded, measured plan; both levels below float32 are used
    for q in ("float16", "uint8"):
        plan = exported.precision["tfjs"][q]
        assert plan == summary["precision"]["tfjs"][q]
        assert plan["target"] == pytest.approx(convert.PLAN_MARGIN * convert.TOLERANCES[q])
        assert plan["calibration_bound"] <= plan["target"]
        assert convert.read_metadata(exported.tfjs[q])["precision"]["tensors"] == plan["tensors"]
        model_json = json.loads((exported.tfjs[q] / "model.json").read_text())
        weights = [w for g in model_json["weightsManifest"] for w in g["weights"]]
        stored = {w["name"]: w.get("quantization", {}).get("dtype", "float32")
                  for w in weights if w["dtype"] == "float32"}
        assert stored == plan["levels"]
        assert set(stored.values()) == set(convert._LEVELS[q])
    assert "precision" not in convert.read_metadata(exported.tfjs["float32"])
    fig = convert.plot_sizes(exported.sizes)
    assert len(fig.axes[0].patches) == len(exported.sizes)


def test_export_refuses_a_non_empty_folder(tmp_path):
    require_converter()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="not empty and was not written by nsfwkit"):
        convert.export(build_tiny_model(), tmp_path / "out", spec=tiny_spec())
    assert (tmp_path / "out" / "mine.txt").read_text() == "user file"
    # overwrite=True does not make a foreign folder replaceable: only the kit's export folder
    with pytest.raises(FileExistsError, match="not written by nsfwkit"):
        convert.export(build_tiny_model(), tmp_path / "out", spec=tiny_spec(), overwrite=True)
    assert (tmp_path / "out" / "mine.txt").read_text() == "user file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]       # no staging left behind


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_export_folders_get_plain_mkdir_modes(tmp_path):
    """Not mkdtemp's 0700: a copy on a web server (another user) must be readable."""
    require_converter()
    old = os.umask(0o022)
    try:
        out = convert.export(build_tiny_model(), tmp_path / "exp", spec=tiny_spec(),
                             quantizations=["float32"], nsfwjs=False).out_dir
    finally:
        os.umask(old)
    folders = [out] + [p for p in out.rglob("*") if p.is_dir()]
    assert len(folders) >= 4                                  # exp, saved_model, tfjs, tfjs/float32
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


def test_kit_folder_markers(tmp_path):
    assert not convert._is_kit_folder(tmp_path)
    (tmp_path / "model.json").write_text('{"userDefinedMetadata": {"other": {}}}')
    assert not convert._is_kit_folder(tmp_path)              # a TF.js model that is not ours
    (tmp_path / "model.json").write_text('{"userDefinedMetadata": {"nsfwkit": {}}}')
    assert convert._is_kit_folder(tmp_path)
    (tmp_path / "model.json").unlink()
    (tmp_path / "export.json").write_text("{}")
    assert convert._is_kit_folder(tmp_path)


def test_composition_label():
    row = {"tensors": {"float32": 81, "uint8": 25}, "weight_bytes": {"float32": 5_400_000, "uint8": 1_230_000}}
    assert convert.composition_label(row) == "f32 81 (5.4 MB) / u8 25 (1.2 MB)"
    assert convert.composition_label({"format": "saved_model"}) == ""


def test_cli_export_tiny_model(tmp_path, capsys):
    require_converter()
    from nsfwkit import cli

    model = build_tiny_model()
    path = tmp_path / "tiny.keras"
    model.save(path)
    tiny_spec().save(tmp_path / "tiny.spec.json")
    argv = ["export", str(path), "--out", str(tmp_path / "exp"), "--quantize", "uint8", "--no-nsfwjs"]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert "tfjs/uint8" in out.out
    assert (tmp_path / "exp" / "tfjs" / "uint8" / "model.json").is_file()
    assert not (tmp_path / "exp" / "tfjs" / "float32").exists()   # reference made in scratch
    assert not (tmp_path / "exp" / "nsfwjs").exists()
    hidden = sorted(p.name for p in (tmp_path / "exp").iterdir() if p.name.startswith("."))
    assert hidden == [fileio.OWNER_MARKER, fileio.LOCK_FILE]      # no staging left behind
    assert "stored as" in out.out and "u8 " in out.out           # the real composition
    summary = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert summary["precision"]["tfjs"]["uint8"]["tensors"]["uint8"] >= 1
    # a second run without --overwrite is a usage error, and leaves the export alone
    assert cli.main(argv) == 2
    assert "exists" in capsys.readouterr().err
    # --overwrite replaces the kit's own export ...
    assert cli.main(["export", str(path), "--out", str(tmp_path / "exp"), "--quantize", "uint8",
                     "--no-nsfwjs", "--overwrite", "-q", "--precision-plan", "none"]) == 0
    summary = json.loads((tmp_path / "exp" / "export.json").read_text())
    plan = summary["precision"]["tfjs"]["uint8"]
    assert summary["precision_plan"] == "none" and plan["target"] is None
    assert plan["tensors"]["float16"] == plan["tensors"]["float32"] == 0   # pure uint8
    model_json = json.loads((tmp_path / "exp" / "tfjs" / "uint8" / "model.json").read_text())
    assert {w.get("quantization", {}).get("dtype") for g in model_json["weightsManifest"]
            for w in g["weights"] if w["dtype"] == "float32"} == {"uint8"}
    capsys.readouterr()
    # ... but never a folder it did not write, even with --overwrite
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not really a jpeg")
    assert cli.main(["export", str(path), "--out", str(foreign), "--overwrite", "--no-nsfwjs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nsfwkit export: ") and "not written by nsfwkit" in err
    assert (foreign / "holiday.jpg").read_bytes() == b"not really a jpeg"


@pytest.mark.parametrize("case", ["model_is_a_folder", "model_missing", "out_is_a_file",
                                  "out_under_a_file"])
def test_cli_export_errors_are_reported_not_raised(case, tmp_path, capsys):
    """No traceback: ``nsfwkit export: <file> — <reason>``, exit 2 (usage)."""
    from nsfwkit import cli

    (tmp_path / "a_folder.keras").mkdir()
    (tmp_path / "file.txt").write_text("x")
    model_arg, out_arg = {
        "model_is_a_folder": (tmp_path / "a_folder.keras", tmp_path / "exp"),
        "model_missing": (tmp_path / "nope.keras", tmp_path / "exp"),
        "out_is_a_file": (None, tmp_path / "file.txt"),
        "out_under_a_file": (None, tmp_path / "file.txt" / "exp"),
    }[case]
    if model_arg is None:
        require_converter()
        model_arg = tmp_path / "tiny.keras"
        build_tiny_model().save(model_arg)
        tiny_spec().save(tmp_path / "tiny.spec.json")
    assert cli.main(["export", str(model_arg), "--out", str(out_arg), "--quantize", "none",
                     "--no-nsfwjs", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nsfwkit export: ") and "Traceback" not in err
    assert str(model_arg if case.startswith("model") else tmp_path / "file.txt") in err
    assert (tmp_path / "file.txt").read_text() == "x"
