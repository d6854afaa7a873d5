"""ONNX export, with parity measured in onnxruntime (CPUExecutionProvider).

>>> from nsfwkit import zoo
>>> from nsfwkit.convert import onnx as convert_onnx
>>> model, spec = zoo.load("mobilenet_v2")
>>> row = convert_onnx.export_onnx(model, "exports/onnx/float32", spec=spec)
>>> row["max_abs_diff"], row["bytes"]

What gets written under ``out_dir``::

    model.onnx     opset :data:`OPSET`; input ``image`` float32 (batch, S, S, 3) NHWC raw RGB
                   0-255 (the scaling is inside), output ``probabilities`` float32
                   (batch, classes); the metadata below is also in ``metadata_props["nsfwkit"]``
    spec.json      the ModelSpec plus input/output, precision, its plan, versions
    export.json    this export's row: size, parity against Keras

The converter is ``tf2onnx`` (1.17) called on a ``tf.function`` of the kit's inference model.
Keras 3's own ``model.export(path, format="onnx")`` calls the same ``tf2onnx`` function, but
first runs ``keras``'s ``patch_tf2onnx()``, which sets ``numpy.object`` and replaces two
``tf2onnx`` functions for the whole process (a numpy-2 work-around ``tf2onnx`` 1.17 no longer
needs for models under 2 GB), and defaults to opset 15: calling ``tf2onnx`` directly avoids
that global side effect.

``float16``: full float16 conversion (activations too, onnxruntime's
``convert_float_to_float16(keep_io_types=True)``) moves the default MobileNetV2's probabilities
by 6.7e-3, over the 1e-3 bar. So the float16 build stores weights as float16 (an initializer
plus a ``Cast`` to float32 that onnxruntime folds at load; arithmetic stays float32), for the
measured mix of weight tensors that keeps the calibration error within the target
(:func:`nsfwkit.convert.runtimes.plan_mix`); the others stay float32.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nsfwkit.convert import runtimes as common
from nsfwkit.spec import ModelSpec

__all__ = ["OPSET", "PRECISIONS", "TOLERANCES", "MODEL_FILE", "OUTPUT_NAME", "export_onnx",
           "onnx_probabilities", "read_onnx_metadata", "runtime_name"]

#: The newest opset tf2onnx 1.17 writes (``tf2onnx.constants.OPSET_TO_IR_VERSION``); onnxruntime
#: 1.32 runs opsets up to 23.
OPSET = 18
PRECISIONS: tuple[str, ...] = ("float32", "float16")
#: Max |Δp| allowed between Keras and onnxruntime per precision (the acceptance bar).
TOLERANCES: dict[str, float] = {"float32": 1e-5, "float16": 1e-3}
MODEL_FILE = "model.onnx"
OUTPUT_NAME = "probabilities"
#: Weight tensors below this many values stay float32 in the float16 build (the saving is nil).
MIN_ELEMENTS = 1024
NUM_THREADS = 2


def _precision(precision: str | None) -> str:
    key = {"none": "float32"}.get(str(precision or "float32").lower(), str(precision).lower())
    if key not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use float32 or float16")
    return key


def runtime_name() -> str:
    ort = common.require("onnxruntime", "onnxruntime")
    return f"onnxruntime {ort.__version__} CPUExecutionProvider ({NUM_THREADS} threads)"


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def session(model: bytes | str | os.PathLike, *, num_threads: int = NUM_THREADS):
    """An onnxruntime CPU session with ``num_threads`` intra-op threads."""
    ort = common.require("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
    options.log_severity_level = 3
    source = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_probabilities(model: bytes | str | os.PathLike, images: np.ndarray, *,
                       num_threads: int = NUM_THREADS, batch_size: int = 32) -> np.ndarray:
    """Run an ONNX classifier in onnxruntime on float32 model inputs ``(N, S, S, 3)`` 0-255.

    Returns:
        ``float32`` ``(N, classes)``.
    """
    sess = session(model, num_threads=num_threads)
    (inp,) = sess.get_inputs()
    results = [sess.run(None, {inp.name: np.ascontiguousarray(batch, np.float32)})[0]
               for batch in common.batches(np.asarray(images), batch_size)]
    n_classes = int(sess.get_outputs()[0].shape[-1])
    return np.concatenate(results).astype(np.float32) if results else np.zeros((0, n_classes), np.float32)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``metadata_props["nsfwkit"]`` of an ONNX file, parsed (``{}`` if none)."""
    props = session(path).get_modelmeta().custom_metadata_map
    return json.loads(props[common.METADATA_KEY]) if common.METADATA_KEY in props else {}


# --------------------------------------------------------------------------------------------
# Converting
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with common.quiet_tf():
            yield
    finally:
        logger.setLevel(level)


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in list(graph.output) + list(graph.input):
        if value.name == old:
            value.name = new


def _to_onnx(export_model, spec: ModelSpec):
    """tf2onnx on a ``tf.function`` of the inference model: input ``image``, output
    :data:`OUTPUT_NAME`, batch dimension named ``batch``."""
    import tensorflow as tf

    tf2onnx = common.require("tf2onnx", "tf2onnx")
    size = spec.image_size
    signature = (tf.TensorSpec((None, size, size, 3), tf.float32, name=spec.input_name),)
    function = tf.function(lambda image: export_model(image, training=False), input_signature=signature)
    with _quiet():
        proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET)
    graph = proto.graph
    (output,) = graph.output
    _rename(graph, output.name, OUTPUT_NAME)
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto


class _HalfWeights:
    """Builds the model with chosen float32 initializers stored as float16 (+ ``Cast``)."""

    def __init__(self, proto):
        from onnx import TensorProto

        self.proto = proto
        self.units = {init.name: int(np.prod(init.dims)) * 2 for init in proto.graph.initializer
                      if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= MIN_ELEMENTS}

    def model(self, names: set[str]):
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        graph = proto.graph
        casts = []
        for init in graph.initializer:
            if init.name not in names:
                continue
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "/float16")
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "/to_float32"))
            init.CopyFrom(half)
        nodes = casts + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
        return proto

    def build(self, names: set[str]) -> bytes:
        return self.model(names).SerializeToString()


def _input_info(spec: ModelSpec) -> dict[str, Any]:
    return {"name": spec.input_name, "shape": ["batch", spec.image_size, spec.image_size, 3],
            "dtype": "float32", "range": [0, 255], "layout": "NHWC RGB", "resize": spec.resize}


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            **{name.replace("-", "_"): importlib.metadata.version(name)
               for name in ("tf2onnx", "onnx", "onnxruntime")}}


def _convert(export_model, spec: ModelSpec, precision: str, *, calibration: np.ndarray,
             plan: bool):
    """The ONNX ModelProto and its precision plan (``None`` for float32)."""
    import onnx

    proto = _to_onnx(export_model, spec)
    if precision == "float32":
        return proto, None
    half = _HalfWeights(proto)
    reference = export_model.predict(calibration, batch_size=32, verbose=0)

    def measure(model_bytes: bytes) -> np.ndarray:
        return np.abs(onnx_probabilities(model_bytes, calibration) - reference).max(-1)

    if not plan:
        model_bytes = half.build(set(half.units))
        info = {"method": "none: every unit quantised", "units": len(half.units),
                "quantized": len(half.units), "float": [], "target": None,
                "calibration_max_abs_diff": round(float(measure(model_bytes).max()), 7)}
    else:
        model_bytes, info = common.plan_mix(
            half.units, build=half.build, measure=measure,
            target=common.PLAN_MARGIN * TOLERANCES[precision], n_images=len(calibration))
    return onnx.load_from_string(model_bytes), info


def export_onnx(model, out_dir: str | os.PathLike, *, spec: ModelSpec, precision: str = "float32",
                calibration: str | os.PathLike | None = None, plan: bool = True,
                overwrite: bool = False, calibration_set: tuple[np.ndarray, dict[str, Any]] | None = None
                ) -> dict[str, Any]:
    """Export a classifier as ONNX and measure it against Keras in onnxruntime.

    Args:
        model: a Keras classifier taking raw RGB 0-255 (not modified).
        out_dir: the folder to create (layout in the module docstring); built under a
            temporary name and moved into place when complete.
        spec: the model's spec.
        precision: ``float32`` or ``float16`` (float16 weight storage, measured mix).
        calibration: a folder of the user's own images that choose the float16 mix; default:
            the kit's safe samples plus generated images.
        plan: ``False`` stores every large weight tensor as float16 (error recorded).
        overwrite: replace an existing ``out_dir`` that the kit wrote (never other folders).
        calibration_set: ``(images, report)`` already loaded; replaces ``calibration``.

    Returns:
        the parity row (:func:`nsfwkit.convert.runtimes.parity_row`) with ``plan``,
        ``calibration`` and ``seconds``; also written as ``out_dir/export.json``.
    """
    import onnx

    precision = _precision(precision)
    for module, package in (("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("tf2onnx", "tf2onnx")):
        common.require(module, package)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    export_model, calib, calib_report, test = common.export_inputs(
        model, spec, precision, calibration=calibration, calibration_set=calibration_set)
    with common.staged_folder(out_dir, overwrite=overwrite) as tmp:
        proto, plan_info = _convert(export_model, spec, precision, calibration=calib, plan=plan)
        sidecar = common.metadata(
            spec, fmt="onnx", precision=precision, model_input=_input_info(spec),
            output={"name": OUTPUT_NAME, "dtype": "float32", "kind": "probabilities",
                    "classes": list(spec.class_names)},
            versions={**_versions(), "opset": OPSET})
        sidecar["plan"], sidecar["calibration"] = plan_info, calib_report
        inner = {k: v for k, v in sidecar.items() if k != "plan"}
        inner["plan"] = {k: v for k, v in (plan_info or {}).items() if k != "float"} or None
        onnx.helper.set_model_props(proto, {common.METADATA_KEY: json.dumps(inner, default=str)})
        path = tmp / MODEL_FILE
        path.write_bytes(proto.SerializeToString())
        common.write_sidecar(tmp, sidecar)
        row = common.parity_row(
            fmt="onnx", precision=precision, path=path,
            reference=export_model.predict(test, batch_size=32, verbose=0),
            probs=onnx_probabilities(path, test), spec=spec, tolerance=TOLERANCES[precision],
            runtime=runtime_name(), input_dtype="float32", opset=OPSET, plan=plan_info,
            calibration=calib_report, seconds=round(time.perf_counter() - t0, 2))
        result = common.finish(tmp, row, out_dir)
    return result
