"""TensorFlow Lite (LiteRT) export, with parity measured in the LiteRT interpreter.

>>> from nsfwkit import zoo
>>> from nsfwkit.convert import tflite as convert_tflite
>>> model, spec = zoo.load("mobilenet_v2")
>>> row = convert_tflite.export_tflite(model, "exports/tflite/int8", spec=spec, quantize="int8")
>>> row["max_abs_diff"], row["decision_flips"], row["bytes"]

What gets written under ``out_dir``::

    model.tflite    the model, input ``image`` (N, S, S, 3) raw RGB 0-255 (float32, or uint8
                    for the int8 build), output float32 probabilities; the metadata below
                    is also inside the flatbuffer (``Model.metadata`` entry ``nsfwkit``, JSON)
    spec.json       the ModelSpec plus input/output dtype, precision, its plan, versions
    export.json     this export's row: size, parity against Keras (see below)

Precisions (``quantize``): ``none`` (float32), ``float16`` (weights stored as float16),
``dynamic`` (dynamic-range: int8 weights, float activations), ``int8`` (full-integer,
calibrated on :func:`nsfwkit.convert.runtimes.calibration_images`, uint8 input so apps feed
camera pixels directly, float output). The converter is TensorFlow's ``tf.lite.TFLiteConverter``
on the kit's inference model (no augmentation layers, input ``image``, preprocessing inside).

Plain quantisation misses the bars (:data:`TOLERANCES`) on the default MobileNetV2 (measured in
LiteRT: float16 6.8e-3, dynamic 6.4e-2, int8 0.11 max |Δp|), so each quantised build is a
MEASURED MIX (:func:`nsfwkit.convert.runtimes.plan_mix`): float16 and dynamic leave the most
sensitive weight tensors in float32 (edited in the converter's flatbuffer), int8 leaves the
most sensitive layers in float through ``tf.lite.experimental.QuantizationDebugger``'s
``denylisted_nodes``; the mix is in ``spec.json`` and ``export.json`` (``plan``).

Parity is measured with LiteRT (``ai_edge_litert.interpreter.Interpreter``, 2 threads), not
the deprecated ``tf.lite.Interpreter``, on :func:`nsfwkit.convert.runtimes.parity_images`
resized with :func:`nsfwkit.images.resize`. The int8 build takes uint8 pixels, so for it both
Keras and LiteRT get the resized pixels rounded to whole numbers: rounding alone (half a grey
level) moves the default model's probabilities by up to 0.08 on smooth generated images, which
is a property of the input, not of the export.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from nsfwkit.convert import runtimes as common
from nsfwkit.spec import ModelSpec

__all__ = ["QUANTIZATIONS", "TOLERANCES", "MODEL_FILE", "export_tflite", "tflite_probabilities",
           "read_tflite_metadata", "runtime_name"]

#: Precisions of :func:`export_tflite` (``none`` is accepted for ``float32``).
QUANTIZATIONS: tuple[str, ...] = ("float32", "float16", "dynamic", "int8")
#: Max |Δp| allowed between Keras and LiteRT per precision (the acceptance bar).
TOLERANCES: dict[str, float] = {"float32": 1e-5, "float16": 1e-3, "dynamic": 2e-2, "int8": 2e-2}
MODEL_FILE = "model.tflite"
_ALIASES = {"none": "float32", "float32": "float32", "float16": "float16", "dynamic": "dynamic",
            "int8": "int8"}
#: Weight tensors below this many values stay float32 in float16 builds (the saving is nil).
MIN_ELEMENTS = 1024
NUM_THREADS = 2


def _precision(quantize: str | None) -> str:
    key = str(quantize or "none").lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown quantize {quantize!r}; use none, float16, dynamic or int8")
    return _ALIASES[key]


def _fb():
    """``(flatbuffer_utils, schema)`` of the LiteRT package."""
    common.require("ai_edge_litert.interpreter", "ai-edge-litert")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils, schema


def runtime_name() -> str:
    return f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')} (CPU, {NUM_THREADS} threads)"


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def _interpreter(model: bytes | str | os.PathLike, num_threads: int):
    interpreter_mod = common.require("ai_edge_litert.interpreter", "ai-edge-litert")
    if isinstance(model, (bytes, bytearray)):
        return interpreter_mod.Interpreter(model_content=bytes(model), num_threads=num_threads)
    return interpreter_mod.Interpreter(model_path=str(model), num_threads=num_threads)


def tflite_probabilities(model: bytes | str | os.PathLike, images: np.ndarray, *,
                         num_threads: int = NUM_THREADS, batch_size: int = 32) -> np.ndarray:
    """Run a ``.tflite`` classifier in LiteRT on model inputs.

    Args:
        model: the file, or its bytes.
        images: ``(N, S, S, 3)`` 0-255 (resized with :func:`nsfwkit.images.resize`); fed as
            float32, or rounded to ``uint8`` when the model's input is uint8 (the int8 build).
        batch_size: images per ``invoke`` (the input's batch dimension is resized to it).

    Returns:
        ``float32`` ``(N, classes)``.
    """
    interpreter = _interpreter(model, num_threads)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    results, shape = [], None
    for batch in common.batches(np.asarray(images), batch_size):
        if shape != batch.shape:
            interpreter.resize_tensor_input(inp["index"], list(batch.shape))
            interpreter.allocate_tensors()
            shape = batch.shape
        if inp["dtype"] == np.uint8:
            batch = np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(batch, dtype=inp["dtype"]))
        interpreter.invoke()
        results.append(np.array(interpreter.get_tensor(out["index"]), dtype=np.float32))
    n_classes = int(out["shape"][-1])
    return np.concatenate(results) if results else np.zeros((0, n_classes), np.float32)


def read_tflite_metadata(path: str | os.PathLike | bytes) -> dict[str, Any]:
    """The ``nsfwkit`` metadata entry inside a ``.tflite`` flatbuffer (``{}`` if none)."""
    fu, _ = _fb()
    data = bytes(path) if isinstance(path, (bytes, bytearray)) else Path(path).read_bytes()
    model = fu.convert_bytearray_to_object(data)
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == common.METADATA_KEY:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode("utf-8"))
    return {}


# --------------------------------------------------------------------------------------------
# Flatbuffer edits
# --------------------------------------------------------------------------------------------
def _opcode(model, code: int, version: int) -> int:
    fu, schema = _fb()
    for i, op in enumerate(model.operatorCodes):
        if fu.get_builtin_code_from_operator_code(op) == code:
            op.version = max(op.version, version)
            return i
    entry = schema.OperatorCodeT()
    entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), version
    model.operatorCodes.append(entry)
    return len(model.operatorCodes) - 1


def _uint8_input(model_bytes: bytes) -> bytes:
    """Give a float-input model a ``uint8`` input (scale 1, zero point 0: raw pixels) through a
    DEQUANTIZE op in front, so the int8 build takes camera pixels directly."""
    fu, schema = _fb()
    model = fu.convert_bytearray_to_object(model_bytes)
    graph = model.subgraphs[0]
    (old,) = graph.inputs
    tensor = graph.tensors[old]
    if tensor.type != schema.TensorType.FLOAT32:
        raise ValueError("the model's input is not float32")
    new = schema.TensorT()
    signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    new.shape, new.shapeSignature = list(tensor.shape), list(signature)
    new.type, new.buffer, new.name = schema.TensorType.UINT8, 0, tensor.name
    new.quantization = schema.QuantizationParametersT()
    new.quantization.scale, new.quantization.zeroPoint = [1.0], [0]
    tensor.name = (tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name) + "/float"
    graph.tensors.append(new)
    index = len(graph.tensors) - 1
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(model, schema.BuiltinOperator.DEQUANTIZE, 1)
    op.inputs, op.outputs = [index], [old]
    graph.operators.insert(0, op)
    graph.inputs = [index]
    for signature in model.signatureDefs or []:
        for item in signature.inputs or []:
            if item.tensorIndex == old:
                item.tensorIndex = index
    return bytes(fu.convert_object_to_bytearray(model))


def _with_metadata(model_bytes: bytes, data: dict[str, Any]) -> bytes:
    fu, schema = _fb()
    model = fu.convert_bytearray_to_object(model_bytes)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(data, default=str).encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = common.METADATA_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (b"nsfwkit", "nsfwkit")]
    model.metadata.append(entry)
    return bytes(fu.convert_object_to_bytearray(model))


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


class _WeightReverter:
    """Turns chosen weight tensors of a weight-quantised model (float16 or dynamic-range) back
    to the float32 values of the unquantised conversion of the same model.

    float16 weights are ``FLOAT16 const -> DEQUANTIZE -> float32``: reverting gives the
    DEQUANTIZE output the float32 data and drops the op. Dynamic-range weights are int8
    constants with scales: reverting retypes the tensor float32 with the original data (the
    op then runs its float kernel). Tensors are matched by position: the same op (in order)
    and input slot in both conversions, checked by op type and shape.
    """

    def __init__(self, quantized: bytes, float32: bytes):
        fu, schema = _fb()
        self.quantized, self._fu, self._schema = quantized, fu, schema
        model = fu.convert_bytearray_to_object(quantized)
        reference = fu.convert_bytearray_to_object(float32)
        ops, ref_ops = self._ops(model), self._ops(reference)
        if [code for code, _ in ops] != [code for code, _ in ref_ops]:
            raise ValueError("the quantised and float32 conversions have different op sequences")
        graph, ref_graph = model.subgraphs[0], reference.subgraphs[0]
        #: quantised tensor index -> unit name; unit name -> float32 bytes
        self._index: dict[int, str] = {}
        self._data: dict[str, np.ndarray] = {}
        self.units: dict[str, int] = {}
        for (_, inputs), (_, ref_inputs) in zip(ops, ref_ops, strict=True):
            for i, r in zip(inputs, ref_inputs, strict=True):
                t = graph.tensors[i] if i >= 0 else None
                if t is None or i in self._index or t.type not in (schema.TensorType.FLOAT16, schema.TensorType.INT8) \
                        or model.buffers[t.buffer].data is None:
                    continue
                ref = ref_graph.tensors[r]
                if list(ref.shape) != list(t.shape) or reference.buffers[ref.buffer].data is None:
                    raise ValueError(f"{_name(t)}: no float32 constant of shape {list(t.shape)} in its place")
                name = _name(t) if _name(t) not in self._data else f"{_name(t)}#{i}"
                self._index[i] = name
                self._data[name] = np.asarray(reference.buffers[ref.buffer].data, np.uint8)
                count = int(np.prod(t.shape))
                if t.type == schema.TensorType.INT8 or count >= MIN_ELEMENTS:
                    self.units[name] = count * (2 if t.type == schema.TensorType.FLOAT16 else 3)

    def _ops(self, model) -> list[tuple[int, list[int]]]:
        """``(builtin code, inputs)`` per op, float16 DEQUANTIZE ops of constants skipped and
        their outputs replaced by their constant inputs."""
        graph, dequantize = model.subgraphs[0], self._schema.BuiltinOperator.DEQUANTIZE
        codes = [self._fu.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
                 for op in graph.operators]
        source = {op.outputs[0]: op.inputs[0] for op, code in zip(graph.operators, codes, strict=True)
                  if code == dequantize and model.buffers[graph.tensors[op.inputs[0]].buffer].data is not None}
        return [(code, [source.get(i, i) for i in op.inputs]) for op, code in zip(graph.operators, codes, strict=True)
                if not (code == dequantize and op.outputs[0] in source)]

    def build(self, keep_quantized: set[str]) -> bytes:
        """The model with every weight tensor NOT in ``keep_quantized`` back in float32
        (float16 tensors under :data:`MIN_ELEMENTS` values always are)."""
        schema = self._schema
        model = self._fu.convert_bytearray_to_object(self.quantized)
        graph = model.subgraphs[0]
        revert = {i: n for i, n in self._index.items() if n not in keep_quantized}
        dequantize = schema.BuiltinOperator.DEQUANTIZE
        kept_ops = []
        for op in graph.operators:
            code = self._fu.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
            if code == dequantize and len(op.inputs) and op.inputs[0] in revert:
                source, target = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
                model.buffers[source.buffer].data = self._data[revert[op.inputs[0]]]
                target.buffer, source.buffer = source.buffer, 0  # the float16 tensor is orphaned
                continue
            kept_ops.append(op)
        graph.operators = kept_ops
        for i, name in revert.items():
            tensor = graph.tensors[i]
            if tensor.type == schema.TensorType.INT8:
                tensor.type, tensor.quantization = schema.TensorType.FLOAT32, None
                model.buffers[tensor.buffer].data = self._data[name]
        return bytes(self._fu.convert_object_to_bytearray(model))


# --------------------------------------------------------------------------------------------
# Converting
# --------------------------------------------------------------------------------------------
def _converter(saved_model: Path, *, precision: str, calibration: np.ndarray | None = None):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if precision != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if calibration is not None:
        converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    return converter


def _int8_builder(saved_model: Path, calibration: np.ndarray):
    """``(layers, build)``: the int8 layers by output tensor name, and a function giving the
    model with exactly the chosen layers quantised (others denylisted), uint8 input."""
    import tensorflow as tf

    converter = _converter(saved_model, precision="int8", calibration=calibration)
    with warnings.catch_warnings():
        # the debugger runs its instrumented model in tf.lite.Interpreter (for layer names
        # only); parity is measured in LiteRT
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([x[None]] for x in calibration))
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    layers = list(dict.fromkeys(row["tensor_name"] for row in csv.DictReader(dump)))

    def build(quantized: set[str]) -> bytes:
        denied = [n for n in layers if n not in quantized]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denied or None)
        return _uint8_input(debugger.get_nondebug_quantized_model())

    return {n: 1 for n in layers}, build


def _convert(saved_model: Path, precision: str, *, calibration: np.ndarray | None,
             reference: np.ndarray | None, plan: bool) -> tuple[bytes, dict[str, Any] | None]:
    """The model bytes and its precision plan (``None`` for float32)."""
    if precision == "float32":
        return _converter(saved_model, precision="float32").convert(), None
    target = common.PLAN_MARGIN * TOLERANCES[precision]

    def measure(model_bytes: bytes) -> np.ndarray:
        return np.abs(tflite_probabilities(model_bytes, calibration) - reference).max(-1)

    if precision == "int8":
        units, build = _int8_builder(saved_model, calibration)
        per_byte = False
    else:
        reverter = _WeightReverter(
            _converter(saved_model, precision=precision).convert(),
            _converter(saved_model, precision="float32").convert())
        units, build, per_byte = reverter.units, reverter.build, True
    if not plan:
        model_bytes = build(set(units))
        return model_bytes, {"method": "none: every unit quantised", "units": len(units),
                             "quantized": len(units), "float": [], "target": None,
                             "calibration_max_abs_diff": round(float(measure(model_bytes).max()), 7)}
    return common.plan_mix(units, build=build, measure=measure, target=target, per_byte=per_byte,
                           n_images=len(calibration))


def _output_name(model_bytes: bytes) -> str:
    """The output's key in the model's (first) signature, e.g. ``output_0``."""
    fu, _ = _fb()
    (signature,) = fu.convert_bytearray_to_object(model_bytes).signatureDefs[:1]
    name = signature.outputs[0].name
    return name.decode() if isinstance(name, bytes) else str(name)


def _input_info(spec: ModelSpec, precision: str) -> dict[str, Any]:
    uint8 = precision == "int8"
    return {"name": spec.input_name, "shape": [None, spec.image_size, spec.image_size, 3],
            "dtype": "uint8" if uint8 else "float32", "range": [0, 255], "layout": "NHWC RGB",
            "quantization": {"scale": 1.0, "zero_point": 0} if uint8 else None,
            "resize": spec.resize}


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "ai_edge_litert": importlib.metadata.version("ai-edge-litert")}


def export_tflite(model, out_dir: str | os.PathLike, *, spec: ModelSpec, quantize: str = "none",
                  calibration: str | os.PathLike | None = None, plan: bool = True,
                  overwrite: bool = False, calibration_set: tuple[np.ndarray, dict[str, Any]] | None = None,
                  saved_model: str | os.PathLike | None = None) -> dict[str, Any]:
    """Export a classifier as a ``.tflite`` model and measure it against Keras in LiteRT.

    Args:
        model: a Keras classifier taking raw RGB 0-255 (not modified).
        out_dir: the folder to create (layout in the module docstring); built under a
            temporary name and moved into place when complete.
        spec: the model's spec (class names, input size, NSFW classes and threshold).
        quantize: ``none`` (float32), ``float16``, ``dynamic`` or ``int8``.
        calibration: a folder of the user's own images for the int8 ranges and the precision
            plan (what a real user should pass); default: the kit's safe samples plus
            generated images. Unreadable files are skipped, counted and reported.
        plan: ``True``: the measured mix that stays within :data:`TOLERANCES` (x
            :data:`~nsfwkit.convert.runtimes.PLAN_MARGIN` on the calibration images).
            ``False``: everything quantised (smaller; error recorded, bar likely missed).
        overwrite: replace an existing ``out_dir`` that the kit wrote (never other folders).
        calibration_set: ``(images, report)`` of :func:`~nsfwkit.convert.runtimes.calibration_images`
            already loaded (one load for every build of a run); replaces ``calibration``.
        saved_model: the SavedModel of ``inference_model(model)`` already written (e.g. the
            export folder's ``saved_model/``): converted instead of exporting a new one.

    Returns:
        the parity row (:func:`nsfwkit.convert.runtimes.parity_row`) with ``plan``,
        ``calibration`` and ``seconds``; also written as ``out_dir/export.json``.
    """
    precision = _precision(quantize)
    _fb()  # fail early when LiteRT is missing
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    export_model, calib, calib_report, test = common.export_inputs(
        model, spec, precision, calibration=calibration, calibration_set=calibration_set)
    if precision == "int8":  # uint8 input: Keras gets the same whole-number pixels as LiteRT
        calib, test = np.rint(calib), np.rint(test)
    with common.staged_folder(out_dir, overwrite=overwrite) as tmp:
        with tempfile.TemporaryDirectory(prefix="tflite-sm-") as scratch, common.quiet_tf():
            if saved_model is None:
                saved_model = Path(scratch) / "saved_model"
                export_model.export(str(saved_model), format="tf_saved_model", verbose=False)
            reference = export_model.predict(calib, batch_size=32, verbose=0) if calib is not None else None
            model_bytes, plan_info = _convert(Path(saved_model), precision, calibration=calib,
                                              reference=reference, plan=plan)
        sidecar = common.metadata(
            spec, fmt="tflite", precision=precision, model_input=_input_info(spec, precision),
            output={"name": _output_name(model_bytes), "dtype": "float32", "kind": "probabilities",
                    "classes": list(spec.class_names)},
            versions=_versions())
        sidecar["plan"] = plan_info
        sidecar["calibration"] = calib_report
        inner = {k: v for k, v in sidecar.items() if k != "plan"}
        inner["plan"] = {k: v for k, v in (plan_info or {}).items() if k != "float"} or None
        path = tmp / MODEL_FILE
        path.write_bytes(_with_metadata(model_bytes, inner))
        common.write_sidecar(tmp, sidecar)
        row = common.parity_row(
            fmt="tflite", precision=precision, path=path,
            reference=export_model.predict(test, batch_size=32, verbose=0),
            probs=tflite_probabilities(path, test), spec=spec, tolerance=TOLERANCES[precision],
            runtime=runtime_name(), input_dtype=sidecar["input"]["dtype"], plan=plan_info,
            calibration=calib_report, seconds=round(time.perf_counter() - t0, 2))
        result = common.finish(tmp, row, out_dir)
    return result
