"""ONNX export: parity in onnxruntime (CPU), the graph's interface and metadata, the float16
weight storage, and output-folder safety."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit.convert import runtimes as common

from runtime_helpers import build_runtime_model, check_images, require, runtime_spec


@pytest.fixture(scope="module")
def ort_export():
    require("onnx", "onnxruntime", "tf2onnx")
    from nsfwkit.convert import onnx as convert_onnx

    return convert_onnx


@pytest.fixture(scope="module")
def tiny():
    return build_runtime_model(), runtime_spec()


@pytest.fixture(scope="module")
def exports(ort_export, tiny, tmp_path_factory):
    model, spec = tiny
    root = tmp_path_factory.mktemp("onnx")
    return {p: ort_export.export_onnx(model, root / p, spec=spec, precision=p) for p in ort_export.PRECISIONS}


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_parity_in_onnxruntime_within_the_bar(ort_export, tiny, exports, precision):
    model, spec = tiny
    row = exports[precision]
    bar = ort_export.TOLERANCES[precision]
    assert row["passed"] and row["max_abs_diff"] <= bar and row["top1_agree"] == 1.0
    assert row["runtime"].startswith("onnxruntime") and "CPUExecutionProvider" in row["runtime"]
    x = common.resized(check_images(), spec.image_size)
    got = ort_export.onnx_probabilities(row["path"], x)
    want = model.predict(x, verbose=0)
    assert np.abs(got - want).max() <= bar
    assert (got.argmax(1) == want.argmax(1)).all()


def test_graph_interface_and_opset(ort_export, exports):
    import onnx

    proto = onnx.load(exports["float32"]["path"])
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == ort_export.OPSET
    sess = ort_export.session(exports["float32"]["path"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(float)", ["batch", 32, 32, 3])
    assert (out.name, out.type, out.shape) == ("probabilities", "tensor(float)", ["batch", 5])
    pixels = np.full((3, 32, 32, 3), 255.0, np.float32)  # raw 0-255 goes straight in
    (probs,) = sess.run(None, {"image": pixels})
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_float16_stores_weights_as_float16(exports):
    import onnx
    from onnx import TensorProto

    graph = onnx.load(exports["float16"]["path"]).graph
    halves = [i for i in graph.initializer if i.data_type == TensorProto.FLOAT16]
    plan = exports["float16"]["plan"]
    assert len(halves) == plan["quantized"] >= 1
    casts = [n for n in graph.node if n.op_type == "Cast" and n.input[0] in {h.name for h in halves}]
    assert len(casts) == len(halves)
    assert exports["float16"]["bytes"] < exports["float32"]["bytes"]


def test_metadata_props_and_sidecar(ort_export, tiny, exports):
    from nsfwkit.spec import ModelSpec

    _, spec = tiny
    path = exports["float16"]["path"]
    sidecar = common.read_sidecar(path)
    inner = ort_export.read_onnx_metadata(path)
    for data in (sidecar, inner):
        assert data["class_names"] == list(spec.class_names) and data["image_size"] == 32
        assert data["nsfw_classes"] == ["Hentai", "Porn", "Sexy"] and data["threshold"] == 0.5
        assert data["input"]["name"] == "image" and data["input"]["range"] == [0, 255]
        assert data["output"]["name"] == "probabilities" and data["precision"] == "float16"
        assert data["versions"]["opset"] == ort_export.OPSET
    assert ModelSpec.load(path.replace("model.onnx", "spec.json")) == spec


def test_refuses_a_foreign_folder(ort_export, tiny, tmp_path):
    model, spec = tiny
    (tmp_path / "photo.jpg").write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="not an nsfwkit export"):
        ort_export.export_onnx(model, tmp_path, spec=spec, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["photo.jpg"]
    assert (tmp_path / "photo.jpg").read_bytes() == b"user data"


def test_unknown_precision_is_refused(ort_export, tiny, tmp_path):
    model, spec = tiny
    with pytest.raises(ValueError, match="unknown precision"):
        ort_export.export_onnx(model, tmp_path / "x", spec=spec, precision="int4")


@pytest.mark.slow
def test_default_model_float32_and_float16_within_the_bar(ort_export, default_model, tmp_path):
    """MobileNetV2 (nsfwjs): plain float16 weights miss 1e-3, the measured mix must not."""
    model, spec = default_model
    rows = {p: ort_export.export_onnx(model, tmp_path / p, spec=spec, precision=p) for p in ort_export.PRECISIONS}
    for p, row in rows.items():
        assert row["passed"] and row["decision_flips"] == 0, (p, row["max_abs_diff"])
    assert rows["float16"]["bytes"] < 0.7 * rows["float32"]["bytes"]
    assert rows["float16"]["plan"]["plain_max_abs_diff"] > ort_export.TOLERANCES["float16"] * common.PLAN_MARGIN
