"""Export a classifier for serving and the browser: SavedModel and TensorFlow.js graph models.

>>> from nsfwkit import convert, zoo
>>> model, spec = zoo.load("mobilenet_v2")
>>> result = convert.export(model, "exports/mobilenet_v2", spec=spec)
>>> result.tfjs["uint8"]          # folder with model.json + weight shards
>>> convert.check_parity(model, result.tfjs["float32"], images)   # runs TF.js in Node

What gets written under ``out_dir``::

    spec.json                 the ModelSpec
    saved_model/              TF SavedModel (``model.export``), float32, input ``image`` 0-255
    tfjs/<q>/model.json       TF.js graph model per quantisation q in float32/float16/uint8;
                              input ``image`` takes raw RGB 0-255 (the scaling is inside)
    nsfwjs/<q>/model.json     the same network with an input taking 0-1 pixels, the convention
                              of nsfwjs's own models: load it with
                              ``nsfwjs.load(url, {type: "graph", size: S})``
    export.json               sizes, timings, the measured mixed-precision plan of each
                              quantised export (also returned as :class:`ExportResult`)

Quantised exports are MIXED precision, chosen by measurement (:class:`_PrecisionPlanner`):
``uint8`` stores each weight tensor as uint8, float16 or float32 and ``float16`` as float16 or
float32, the cheapest mix whose emulated TF.js output stays within the bar
(:data:`TOLERANCES`) on calibration images. Plain per-tensor uint8 moves the default
MobileNetV2's probabilities by ~0.2 (TF.js has no per-channel scales, and batch-norm folding
gives kernel columns very different ranges), plain float16 by ~1e-2.

Why two TF.js flavours: nsfwjs's ``infer()`` divides pixels by 255 *before* the model, so a
model with a ``Rescaling(1/255)`` inside would see pixels/65025. The ``nsfwjs/`` export folds
the 255 into the model's first ``Rescaling`` (or prepends ``Rescaling(255)``), so nsfwjs feeds it
correctly; everything of ours (the web view, :func:`tfjs_probabilities`) reads ``input_range``
from the model's metadata and feeds either flavour correctly.

Every ``model.json`` carries ``userDefinedMetadata.nsfwkit``: class names, input size, input
range, resize method, NSFW classes and threshold, quantisation, and the graph node names of the
last conv features and pre-softmax logits (for Grad-CAM in TF.js).

The converter (Python package ``tensorflowjs``) is optional and imported lazily: see
``requirements/convert.txt`` for the install recipe that keeps TensorFlow 2.21, and
:func:`_import_converter` for why it needs two import-time stand-in modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .fileio import write_json
from . import paths
from .spec import NSFWJS_CLASSES, ModelSpec

__all__ = [
    "QUANTIZATIONS",
    "TOLERANCES",
    "ExportResult",
    "ParityReport",
    "ConverterMissingError",
    "NodeMissingError",
    "inference_model",
    "export_saved_model",
    "export_tfjs",
    "export",
    "read_metadata",
    "size_table",
    "weight_composition",
    "composition_label",
    "plot_sizes",
    "keras_probabilities",
    "tfjs_probabilities",
    "check_parity",
    "compare",
    "nsfwjs_probabilities",
    "run_node",
    "find_node",
]

#: Quantisations of the TF.js weights; ``float32`` means none.
QUANTIZATIONS: tuple[str, ...] = ("float32", "float16", "uint8")
#: Max |Δp| allowed between Keras and TF.js per quantisation (the acceptance bar).
TOLERANCES: dict[str, float] = {"float32": 1e-5, "float16": 1e-3, "uint8": 1e-2}
_QUANT_ALIASES = {"none": "float32", "float32": "float32", "float16": "float16", "uint8": "uint8"}
#: Keras layers that only act in training (random augmentation): replaced by ``Identity`` on
#: export, because TF.js cannot run them (``Unknown layer: RandomFlip``, AssignVariableOp).
_AUGMENTATION_LAYERS = {"AugMix", "CutMix", "MixUp", "RandAugment", "Solarization"}
#: The Python converter pinned by requirements/convert.txt.
TFJS_CONVERTER_VERSION = "4.22.0"
METADATA_KEY = "nsfwkit"
METADATA_FORMAT = 1


class ConverterMissingError(ImportError):
    """The ``tensorflowjs`` converter package is not installed."""


class NodeMissingError(RuntimeError):
    """Node.js or the npm packages needed to run TF.js are missing."""


# --------------------------------------------------------------------------------------------
# The converter import
# --------------------------------------------------------------------------------------------
def _stand_in(name: str, doc: str) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__spec__ = importlib.util.spec_from_loader(name, loader=None)
    return module


def _import_converter():
    """Import ``tensorflowjs``'s SavedModel converter module without its unused heavy deps.

    ``tensorflowjs`` 4.22 (the newest release) imports every converter at package import:
    ``tf_saved_model_conversion_v2`` does ``import tensorflow_decision_forests`` (to list TF-DF
    ops), and ``converters/__init__`` imports ``jax_conversion`` (``from jax.experimental import
    jax2tf``). Neither is used when converting a SavedModel. The real TF-DF 1.12 does not load on
    TF 2.21 (undefined symbol in inference.so) and its pin would downgrade TensorFlow; real jax
    costs ~520 MB. So, *only when those packages are not installed*, and *only for the duration
    of this import*, empty stand-in modules sit in ``sys.modules``; they are removed right after,
    so nothing else in the process ever sees a fake ``jax``. Keras is imported first: Keras
    checks for an importable jax at its own import and would otherwise find the stand-in.

    Returns:
        the module ``tensorflowjs.converters.tf_saved_model_conversion_v2``.

    Raises:
        ConverterMissingError: ``tensorflowjs`` is not installed (message gives the recipe).
    """
    loaded = sys.modules.get("tensorflowjs.converters.tf_saved_model_conversion_v2")
    if loaded is not None:
        return loaded
    if importlib.util.find_spec("tensorflowjs") is None:
        raise ConverterMissingError(
            "the TensorFlow.js converter is not installed: run `pip install --no-deps "
            "-r requirements/convert.txt` (plain `pip install tensorflowjs` downgrades TensorFlow)"
        )
    import keras  # noqa: F401  (must precede any jax stand-in; see above)

    stand_ins: dict[str, types.ModuleType] = {}
    if importlib.util.find_spec("tensorflow_decision_forests") is None:
        stand_ins["tensorflow_decision_forests"] = _stand_in(
            "tensorflow_decision_forests", "nsfwkit stand-in: TF-DF is unused by SavedModel conversion")
    if importlib.util.find_spec("jax") is None:
        jax = _stand_in("jax", "nsfwkit stand-in: jax is unused by SavedModel conversion")
        jax.experimental = _stand_in("jax.experimental", "nsfwkit stand-in")
        jax.experimental.jax2tf = _stand_in("jax.experimental.jax2tf", "nsfwkit stand-in")
        stand_ins.update({"jax": jax, "jax.experimental": jax.experimental,
                          "jax.experimental.jax2tf": jax.experimental.jax2tf})
    try:
        sys.modules.update(stand_ins)
        from tensorflowjs.converters import tf_saved_model_conversion_v2 as conversion
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return conversion


# --------------------------------------------------------------------------------------------
# The inference model
# --------------------------------------------------------------------------------------------
def _is_augmentation(layer) -> bool:
    name = type(layer).__name__
    return name.startswith("Random") or name in _AUGMENTATION_LAYERS


def _contains_augmentation(model) -> bool:
    for layer in model.layers:
        if _is_augmentation(layer):
            return True
        if hasattr(layer, "layers") and _contains_augmentation(layer):
            return True
    return False


def _copy_weights(source, target) -> None:
    """Copy weights layer by layer (matched by name, recursing into nested models)."""
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            original = source.get_layer(layer.name)
        except ValueError:
            continue  # a layer we added (e.g. a folded Rescaling): no weights to copy
        if hasattr(layer, "layers") and hasattr(original, "layers"):
            _copy_weights(original, layer)
        else:
            layer.set_weights(original.get_weights())


def inference_model(model, *, input_range: tuple[float, float] = (0.0, 255.0),
                    input_name: str = "image"):
    """The model to export: no augmentation layers, a named input, the wanted input range.

    The caller's model is never modified: when something must change, a clone with copied
    weights is returned; otherwise ``model`` itself.

    Args:
        model: a Keras classifier taking raw RGB 0-255 ``(N, S, S, 3)``.
        input_range: ``(0, 255)`` keeps the input as is. ``(0, 1)`` makes the input take
            pixels / 255 (nsfwjs's convention): the factor 255 is folded into the model's first
            layer when that is a ``Rescaling`` applied straight to the input (exactly), else a
            ``Rescaling(255)`` is prepended.
        input_name: name of the input layer (it becomes the graph model's input key).

    Returns:
        a ``keras.Model`` with one input named ``input_name``.
    """
    import keras

    lo, hi = (float(v) for v in input_range)
    if (lo, hi) not in ((0.0, 255.0), (0.0, 1.0)):
        raise ValueError(f"input_range must be (0, 255) or (0, 1), got {input_range}")
    if len(model.inputs) != 1:
        raise ValueError(f"expected a single-input classifier, got {len(model.inputs)} inputs")
    factor = 255.0 / hi  # 1 for 0-255 input, 255 for 0-1 input
    first_rescale = None
    if factor != 1.0:
        first = next((l for l in model.layers if type(l).__name__ != "InputLayer"), None)
        try:
            fed_by_input = first is not None and first.input is model.inputs[0]
        except (AttributeError, ValueError):  # layer used several times, or not built
            fed_by_input = False
        if fed_by_input and type(first).__name__ == "Rescaling":
            first_rescale = first.name

    needs_clone = _contains_augmentation(model) or first_rescale is not None
    current = model
    if needs_clone:
        def clone_fn(layer):
            if _is_augmentation(layer):
                return keras.layers.Identity(name=layer.name)
            config = layer.get_config()
            if layer.name == first_rescale:
                scale = np.asarray(config["scale"], dtype=np.float64) * factor
                config["scale"] = scale.tolist() if scale.ndim else float(scale)
            return layer.__class__.from_config(config)

        current = keras.models.clone_model(model, clone_function=clone_fn, recursive=True)
        _copy_weights(model, current)
        if first_rescale is not None:
            factor = 1.0

    input_tensor = current.inputs[0]
    shape = tuple(input_tensor.shape[1:])
    current_name = getattr(input_tensor, "name", "")
    if factor != 1.0 or current_name != input_name:
        inputs = keras.Input(shape=shape, name=input_name)
        x = keras.layers.Rescaling(factor, name="from_unit_range")(inputs) if factor != 1.0 else inputs
        outputs = current(x)
        current = keras.Model(inputs, outputs, name=f"{model.name}_export")
    return current


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _public_mode() -> int:
    """The mode a plain ``mkdir`` would give a folder (0o777 minus the umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask


def _is_kit_folder(folder: Path) -> bool:
    """Whether ``folder`` is something this module wrote, so ``overwrite`` may replace it: an
    export (``export.json``), a TF.js graph model with nsfwkit metadata (``model.json``), or
    a SavedModel with its ``spec.json`` (:func:`export_saved_model`)."""
    if (folder / "export.json").is_file():
        return True
    if (folder / "saved_model.pb").is_file() and (folder / "spec.json").is_file():
        return True
    try:
        data = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        return METADATA_KEY in data.get("userDefinedMetadata", {})
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def _atomic_dir(dest: Path, *, overwrite: bool):
    """Build a folder under a temporary name and move it into place only when complete.

    An existing non-empty ``dest`` is replaced only with ``overwrite`` AND only when it is a
    folder this kit wrote (:func:`_is_kit_folder`): ``--overwrite`` pointed at the wrong folder
    (a dataset, a home directory) is refused instead of deleting it. The staging folder gets
    the mode a plain ``mkdir`` would (not ``mkdtemp``'s 0700), so a copy on a web server is
    readable by it.
    """
    from . import fileio

    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise FileExistsError(f"{dest}: exists and is not a folder")
        if any(dest.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"{dest}: exists and is not empty (pass overwrite=True / --overwrite)")
            if not _is_kit_folder(dest):
                raise FileExistsError(
                    f"{dest}: exists and is not an nsfwkit export (no export.json); refusing to "
                    "replace it even with overwrite: choose a new or empty folder")
    with fileio.replace_dir(dest) as tmp:
        os.chmod(tmp, _public_mode())
        yield tmp
        if tmp.is_dir():
            os.chmod(tmp, _public_mode())  # a writer may have recreated it


def _write_json(path: Path, data: Any) -> Path:
    return write_json(path, data)


def _quant(quantization: str | None) -> str:
    key = str(quantization or "none").lower()
    if key not in _QUANT_ALIASES:
        raise ValueError(f"unknown quantization {quantization!r}; use none, float16 or uint8")
    return _QUANT_ALIASES[key]


def export_saved_model(model, out_dir: str | os.PathLike, *, spec: ModelSpec | None = None,
                       overwrite: bool = False) -> Path:
    """Write a TF SavedModel (``model.export``) of the inference model, plus ``spec.json``.

    Args:
        model: a Keras classifier (see :func:`inference_model`; it is applied here).
        out_dir: the SavedModel folder to create.
        spec: written as ``out_dir/spec.json`` when given.
        overwrite: replace an existing non-empty folder (atomically).

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    export_model = inference_model(model, input_name=spec.input_name if spec else "image")
    with _atomic_dir(out_dir, overwrite=overwrite) as tmp:
        shutil.rmtree(tmp)  # model.export wants to create the folder itself
        with _quiet_tf():
            export_model.export(str(tmp), format="tf_saved_model", verbose=False)
        if spec is not None:
            spec.save(tmp / "spec.json")
    return out_dir


def find_node(model_json: dict, *, layer: str | None = None, op: str | None = None) -> str | None:
    """Find a node in a graph model's topology.

    Args:
        model_json: a parsed TF.js graph ``model.json``.
        layer: a Keras layer name: returns the LAST non-constant node inside that layer's name
            scope (Keras/TF suffix ``_N`` allowed), i.e. the layer's output after op fusion.
        op: with ``layer=None``, returns the input of the last node of this op type (e.g.
            ``Softmax`` -> the pre-softmax logits node).

    Returns:
        the node name, or ``None``.
    """
    nodes = model_json.get("modelTopology", {}).get("node", [])
    if layer is not None:
        pattern = re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/")
        hits = [n["name"] for n in nodes if n.get("op") != "Const" and pattern.search(n["name"])]
        return hits[-1] if hits else None
    if op is not None:
        hits = [n for n in nodes if n.get("op") == op]
        if not hits or not hits[-1].get("input"):
            return None
        return hits[-1]["input"][0].lstrip("^").split(":")[0]
    return None


def _metadata(spec: ModelSpec, *, quantization: str, input_range: tuple[float, float],
              nsfwjs: bool) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    data = spec.to_dict()
    data.update({
        "format": METADATA_FORMAT,
        "quantization": quantization,
        "input_range": [float(v) for v in input_range],
        "preprocessing": ("pixels / 255 outside the model (nsfwjs convention), then the "
                          "model's own scaling" if input_range[1] == 1.0 else spec.preprocessing),
        "nsfwjs_compatible": bool(nsfwjs),
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__,
                     "tfjs_converter": TFJS_CONVERTER_VERSION},
    })
    return data


def _read_weights(model_dir: Path, *, int32: bool = False) -> dict[str, np.ndarray]:
    """The weights of an unquantised graph model folder, by name: float32 ones (and int32 ones
    with ``int32=True``; others skipped)."""
    model_json = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    out: dict[str, np.ndarray] = {}
    for group in model_json["weightsManifest"]:
        data = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            count = int(np.prod(w["shape"], dtype=np.int64))
            dtype = w.get("dtype", "float32")
            if "quantization" in w or dtype not in ("float32", "int32"):
                raise ValueError(f"{model_dir}: {w['name']} is quantised or not 4-byte")
            if dtype == "float32" or int32:
                out[w["name"]] = np.frombuffer(data, "<f4" if dtype == "float32" else "<i4",
                                               count, offset).reshape(w["shape"])
            offset += 4 * count
    return out


# --------------------------------------------------------------------------------------------
# Mixed precision: which weight tensors to store as uint8 / float16 / float32, by measurement
# --------------------------------------------------------------------------------------------
#: Bytes per value of each storage dtype of TF.js weights.
_BYTES = {"uint8": 1, "float16": 2, "float32": 4}
#: Storage dtypes a tensor may get, cheapest first, per quantisation of the export.
_LEVELS = {"float16": ("float16", "float32"), "uint8": ("uint8", "float16", "float32")}
#: The planner's default target, as a fraction of the bar (:data:`TOLERANCES`): the margin
#: for images whose probabilities move more than any calibration image's. Measured in TF.js
#: (Node, wasm) on the default MobileNetV2, held-out max |dp| over 18 images (the parity tests'
#: 9 + the 9 samples), as a fraction of the bar, and the tfjs/ folder size (float32: 10.59 MB):
#:
#:     margin   float16                      uint8
#:     0.5      0.16  7.58 MB (7 f16 tensors)   0.06  5.17 MB (25 u8, 23 f16)
#:     0.75     0.19  6.47 MB (15 f16)          0.32  4.73 MB (26 u8, 24 f16)
#:     1.0      0.12  6.32 MB (18 f16)          0.31  4.68 MB (26 u8, 28 f16)
#:
#: 0.75 takes most of the size gain of 1.0 (1.1 of 1.3 MB for float16, 0.44 of 0.49 for uint8)
#: and keeps a safety factor: on a random-head MobileNetV2 the held-out error reached 0.85x the
#: calibration bound, i.e. at most 0.64x the bar here (factor 1.6; 3+ on the default model),
#: where 1.0 would leave 0.85x (factor 1.2) for models and images unlike the calibration set.
PLAN_MARGIN = 0.75
#: Activations the converter fuses into ``_FusedConv2D``/``_FusedMatMul`` (undone for gradients).
_FUSED_ACTIVATIONS = {"Relu", "Relu6", "Elu", "Selu", "Tanh", "Sigmoid", "LeakyRelu"}


def _dequantize_like_tfjs(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` (float32) as TF.js holds them after loading a ``dtype``-quantised tensor.

    uint8: the converter's per-tensor affine quantisation (``tensorflowjs.quantization``:
    range nudged so that 0 is exact, ``q = round((v - min) / scale)``), then TF.js's
    ``q * scale + min`` in float64 stored as float32. float16: a cast and back. float32: as is.
    """
    values = np.asarray(values, np.float32)
    if dtype == "float32":
        return values
    if dtype == "float16":
        return values.astype(np.float16).astype(np.float32)
    if dtype != "uint8":
        raise ValueError(f"unknown storage dtype {dtype!r}")
    from tensorflowjs import quantization  # noqa: PLC0415  (after _import_converter)

    q, meta = quantization.quantize_weights(values, np.uint8)
    return (q.astype(np.float64) * float(meta["scale"]) + float(meta["min"])).astype(np.float32)


def _calibration_images(image_size: int) -> np.ndarray:
    """Safe images that CHOOSE the mixed precision, distinct from the parity tests' images.

    scikit-image's bundled photos that :func:`nsfwkit.samples.sample_images` does not use
    (colour and gray), mirrored centre crops of the ones it does, and generated blobs/noise
    with other seeds; resized the nsfwkit way.

    Returns:
        ``float32`` ``(N, image_size, image_size, 3)``, 0-255.
    """
    import skimage.data

    from . import samples
    from .images import resize

    raw = []
    for name in ("immunohistochemistry", "retina", "colorwheel", "logo",
                 "brick", "coins", "grass", "gravel", "moon", "page", "text", "cell", "clock"):
        img = np.asarray(getattr(skimage.data, name)())
        raw.append(np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3])
    raw.append(np.asarray(skimage.data.stereo_motorcycle()[0]))
    photos = samples.sample_images()
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field"):
        img = photos[name]
        h, w = img.shape[:2]
        raw.append(img[h // 8: h - h // 8, w // 8: w - w // 8][:, ::-1])
    raw += [samples.synthetic_image("blobs", image_size=160, seed=11),
            samples.synthetic_image("blobs", image_size=160, seed=12),
            samples.synthetic_image("noise", image_size=48, seed=13)]
    return np.stack([resize(np.asarray(img, np.uint8), image_size) for img in raw])


def _unfuse(graph_def) -> None:
    """Rewrite ``_FusedConv2D``/``_FusedMatMul`` (no gradient in TF) as Conv2D/MatMul +
    BiasAdd (+ activation), in place; the output keeps the fused node's name."""
    import tensorflow as tf

    nodes = []
    for node in graph_def.node:
        if node.op not in ("_FusedConv2D", "_FusedMatMul"):
            nodes.append(node)
            continue
        ops = [s.decode() for s in node.attr["fused_ops"].list.s]
        if not ops or ops[0] != "BiasAdd" or len(ops) > 2 or (ops[1:] and ops[1] not in _FUSED_ACTIVATIONS):
            raise NotImplementedError(f"{node.name}: fused ops {ops}")
        base = tf.compat.v1.NodeDef(name=node.name + "/_nsfwkit_op", op=node.op[len("_Fused"):])
        base.input.extend(node.input[:2])
        keep = (("T", "strides", "padding", "explicit_paddings", "data_format", "dilations")
                if node.op == "_FusedConv2D" else ("T", "transpose_a", "transpose_b"))
        for key in keep:
            if key in node.attr:
                base.attr[key].CopyFrom(node.attr[key])
        bias = tf.compat.v1.NodeDef(name=node.name + ("/_nsfwkit_bias" if len(ops) > 1 else ""),
                                    op="BiasAdd")
        bias.input.extend([base.name, node.input[2]])
        bias.attr["T"].CopyFrom(node.attr["T"])
        if "data_format" in node.attr:
            bias.attr["data_format"].CopyFrom(node.attr["data_format"])
        nodes += [base, bias]
        if len(ops) > 1:
            act = tf.compat.v1.NodeDef(name=node.name, op=ops[1])
            act.input.append(bias.name)
            act.attr["T"].CopyFrom(node.attr["T"])
            if ops[1] == "LeakyRelu":
                act.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
            nodes.append(act)
    del graph_def.node[:]
    graph_def.node.extend(nodes)


class _GraphEmulator:
    """A float32 TF.js graph model run in TensorFlow with replaceable weights.

    The model.json topology is a TF GraphDef whose ``Const`` weights are the exact (batch-norm
    folded) arrays TF.js loads; each float32 one becomes a placeholder, so any mix of
    dequantised weights (:func:`_dequantize_like_tfjs`) can be evaluated, and gradients of the
    logits with respect to every weight give first-order sensitivities.
    """

    def __init__(self, model_dir: Path):
        import tensorflow as tf
        from google.protobuf import json_format

        model_dir = Path(model_dir)
        model_json = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
        weights = _read_weights(model_dir, int32=True)
        self.weights = {n: v for n, v in weights.items() if v.dtype == np.float32}
        self.names = list(self.weights)
        graph_def = tf.compat.v1.GraphDef()
        json_format.ParseDict(model_json["modelTopology"], graph_def)
        kept = []
        for node in graph_def.node:
            if node.op == "Const" and node.name in weights:
                if node.name in self.weights:
                    continue  # fed through a placeholder
                node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name]))
            kept.append(node)
        del graph_def.node[:]
        graph_def.node.extend(kept)
        try:
            _unfuse(graph_def)
            self.differentiable = True
        except NotImplementedError:
            self.differentiable = False
        (sig_in,) = model_json["signature"]["inputs"].values()
        (sig_out,) = model_json["signature"]["outputs"].values()
        shape = [int(d.get("size", -1)) for d in sig_in["tensorShape"]["dim"]]
        self.graph = tf.Graph()
        with self.graph.as_default():
            self._ph = {n: tf.compat.v1.placeholder(tf.float32, v.shape) for n, v in self.weights.items()}
            self._x = tf.compat.v1.placeholder(tf.float32, [s if s > 0 else None for s in shape])
            input_map = {f"{n}:0": p for n, p in self._ph.items()}
            input_map[sig_in["name"]] = self._x
            (self._y,) = tf.graph_util.import_graph_def(
                graph_def, input_map=input_map, return_elements=[sig_out["name"]], name="")
            softmax = [op for op in self.graph.get_operations() if op.type == "Softmax"]
            #: with a softmax: its input (logits); else the output itself
            self.softmax = bool(softmax)
            self._z = softmax[-1].inputs[0] if softmax else self._y
            self._grads = None
        self.session = tf.compat.v1.Session(graph=self.graph)

    def run(self, images: np.ndarray, overrides: dict[str, np.ndarray] | None = None,
            *, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, outputs)`` float32 ``(N, classes)`` with some weights replaced."""
        feed = {self._ph[n]: v for n, v in self.weights.items()}
        feed.update({self._ph[n]: v for n, v in (overrides or {}).items()})
        zs, ys = [], []
        for start in range(0, len(images), batch_size):
            feed[self._x] = images[start: start + batch_size]
            z, y = self.session.run([self._z, self._y], feed)
            zs.append(z)
            ys.append(y)
        return np.concatenate(zs), np.concatenate(ys)

    def linear_changes(self, images: np.ndarray, deltas: dict[str, dict[str, np.ndarray]]
                       ) -> dict[str, np.ndarray]:
        """First-order change of every logit from each weight's change, per image.

        Args:
            deltas: key -> weight name -> change of that weight (e.g. its quantisation error).

        Returns:
            key -> ``float64`` ``(weights, N, classes)``: ``<d logit / d w, delta w>``.
        """
        import tensorflow as tf

        if self._grads is None:
            with self.graph.as_default():
                plist = [self._ph[n] for n in self.names]
                self._grads = [tf.gradients(self._z[0, c], plist) for c in range(int(self._z.shape[-1]))]
        out = {k: np.zeros((len(self.names), len(images), len(self._grads))) for k in deltas}
        feed = {self._ph[n]: v for n, v in self.weights.items()}
        for i in range(len(images)):
            feed[self._x] = images[i: i + 1]
            grads = self.session.run([[g for g in gs if g is not None] for gs in self._grads], feed)
            for c, gs in enumerate(self._grads):
                values = iter(grads[c])
                for k, g in enumerate(gs):
                    if g is None:
                        continue
                    value = next(values)
                    for key, delta in deltas.items():
                        out[key][k, i, c] = float(np.vdot(value, delta[self.names[k]]))
        return out

    def close(self) -> None:
        self.session.close()


class _PrecisionPlanner:
    """Chooses, by measurement, each weight tensor's storage dtype for a quantised export.

    Method (per SavedModel, shared by its float16 and uint8 conversions):

    1. Emulate the float32 graph model in TF (:class:`_GraphEmulator`) on calibration images
       (:func:`_calibration_images`, never the test images).
    2. Sensitivity of tensor ``i`` at storage dtype ``d``: the first-order change of every
       logit of every image when only that tensor is dequantised the TF.js way, ``e_i(d) =
       J_i · (deq_d(w_i) - w_i)`` (one backward pass per image and class).
    3. Upgrades (uint8 -> float16 -> float32) are ranked by "worst-case probability error
       removed per extra byte": gain ``B(e_i(lo)) - B(e_i(hi))`` over cost ``size_i x
       (bytes_hi - bytes_lo)`` (levels that do not lower ``B`` are skipped), where
       ``B(dz) = max over images of (max_c dz - min_c dz) / 4`` bounds, to
       first order, the change of every softmax probability whatever the image's
       probabilities (the softmax Jacobian ``diag(p) - p pT`` has ``|dp_c| <= (max dz - min dz)
       p_c (1 - p_c)``), so it holds for borderline images too, not only the calibration ones.
    4. The cheapest prefix of that ranking whose REAL (non-linear, emulated) logits meet
       ``B(z_quantised - z_float32) <= target`` is found by bisection; ``target`` defaults to
       three quarters of the export's bar (:data:`PLAN_MARGIN` x :data:`TOLERANCES`).
    """

    def __init__(self, reference: Path, *, input_range: tuple[float, float]):
        self.emulator = _GraphEmulator(reference)
        size = int(self.emulator._x.shape[1])
        images = _calibration_images(size)
        if input_range[1] == 1.0:
            images = images / np.float32(255.0)
        self.images = images.astype(np.float32)
        self.z0, self.p0 = self.emulator.run(self.images)
        self._sensitivity: dict[str, np.ndarray] = {}
        self._dequantized: dict[str, dict[str, np.ndarray]] = {}
        self._plans: dict[tuple[str, float], tuple[dict | None, dict[str, Any]]] = {}

    def _bound(self, dz: np.ndarray) -> float:
        if not self.emulator.softmax:
            return float(np.abs(dz).max()) if dz.size else 0.0
        return float(0.25 * (dz.max(-1) - dz.min(-1)).max()) if dz.size else 0.0

    def dequantized(self, dtype: str) -> dict[str, np.ndarray]:
        if dtype not in self._dequantized:
            self._dequantized[dtype] = {n: _dequantize_like_tfjs(v, dtype)
                                        for n, v in self.emulator.weights.items()}
        return self._dequantized[dtype]

    def sensitivity(self, dtype: str) -> np.ndarray:
        """``(weights, N, classes)`` first-order logit changes (0 for float32)."""
        em = self.emulator
        if dtype == "float32":
            return np.zeros((len(em.names), len(self.images), self.z0.shape[-1]))
        missing = [d for d in ("float16", "uint8") if d not in self._sensitivity]
        if dtype in missing:
            deltas = {d: {n: self.dequantized(d)[n] - em.weights[n] for n in em.names} for d in missing}
            if em.differentiable:
                self._sensitivity.update(em.linear_changes(self.images, deltas))
            else:  # exotic fused ops: measure each tensor alone (slower, exact)
                for d in missing:
                    self._sensitivity[d] = np.stack([
                        em.run(self.images, {n: self.dequantized(d)[n]})[0] - self.z0 for n in em.names])
        return self._sensitivity[dtype]

    def measure(self, levels: dict[str, str]) -> dict[str, float]:
        """Emulated error of a storage plan on the calibration images."""
        overrides = {n: self.dequantized(d)[n] for n, d in levels.items() if d != "float32"}
        z, p = self.emulator.run(self.images, overrides)
        return {"bound": self._bound(z - self.z0), "max_abs_diff": float(np.abs(p - self.p0).max())}

    def plan(self, quantization: str, *, target: float | None = None) -> tuple[dict, dict[str, Any]]:
        """Choose the storage dtype of every float32 weight for ``quantization``.

        Returns:
            ``(quantization_dtype_map, info)``: the converter's map (``{"uint8": [names],
            "float16": [names]}``; names absent stay float32) and a JSON-able summary.
        """
        target = float(PLAN_MARGIN * TOLERANCES[quantization] if target is None else target)
        if (quantization, target) in self._plans:
            return self._plans[quantization, target]
        t0 = time.perf_counter()
        levels = _LEVELS[quantization]
        em = self.emulator
        sizes = {n: int(v.size) for n, v in em.weights.items()}
        sens = {d: self.sensitivity(d) for d in levels}
        moves, ladders = [], {}
        for i, name in enumerate(em.names):
            # the tensor's own worst-case error per level; a level no better than a cheaper
            # one (e.g. float16 for a scalar that uint8 stores exactly) is skipped
            own = {d: self._bound(sens[d][i]) for d in levels}
            ladder = [levels[0]]
            for d in levels[1:]:
                if own[d] < own[ladder[-1]]:
                    ladder.append(d)
            ladders[name] = ladder
            for step, (lo, hi) in enumerate(zip(ladder, ladder[1:]), start=1):
                gain = own[lo] - own[hi]
                cost = sizes[name] * (_BYTES[hi] - _BYTES[lo])
                moves.append((-gain / cost, i, step))
        moves.sort()
        order, reached = [], {}
        for _, i, step in moves:  # an upgrade comes after the ones it builds on
            name = em.names[i]
            for s in range(reached.get(i, 0) + 1, step + 1):
                order.append((name, ladders[name][s]))
                reached[i] = s

        def plan_at(k: int) -> dict[str, str]:
            chosen = {n: levels[0] for n in em.names}
            chosen.update(dict(order[:k]))
            return chosen

        lo, hi, evaluations = 0, len(order), 0
        while lo < hi:  # the shortest prefix that meets the target (bisection)
            mid = (lo + hi) // 2
            evaluations += 1
            if self.measure(plan_at(mid))["bound"] <= target:
                hi = mid
            else:
                lo = mid + 1
        chosen = plan_at(lo)
        measured = self.measure(chosen)
        qmap = {d: [_fnmatch_escape(n) for n in em.names if chosen[n] == d]
                for d in levels if d != "float32"}
        qmap = {d: names for d, names in qmap.items() if names}
        counts = {d: sum(1 for n in em.names if chosen[n] == d) for d in levels}
        info = {
            "method": "first-order logit sensitivity per tensor, greedy by gain per byte, "
                      "bisection on the emulated calibration error",
            "target": target,
            "calibration_images": int(len(self.images)),
            "calibration_bound": round(measured["bound"], 7),
            "calibration_max_abs_diff": round(measured["max_abs_diff"], 7),
            "tensors": counts,
            "bytes": {d: int(sum(sizes[n] * _BYTES[d] for n in em.names if chosen[n] == d))
                      for d in levels},
            "weight_bytes": int(sum(sizes[n] * _BYTES[chosen[n]] for n in em.names)),
            "weight_bytes_all_float32": int(4 * sum(sizes.values())),
            "evaluations": evaluations,
            "seconds": round(time.perf_counter() - t0, 3),
            "levels": {n: chosen[n] for n in em.names},
        }
        self._plans[quantization, target] = (qmap or None, info)
        return self._plans[quantization, target]

    def pure(self, quantization: str) -> tuple[dict, dict[str, Any]]:
        """No plan: every float32 weight tensor stored as ``quantization`` (smallest files).

        The emulated calibration error is still measured and reported, so the cost is visible.

        Returns:
            ``(quantization_dtype_map, info)`` like :meth:`plan` (``target`` is ``None``).
        """
        t0 = time.perf_counter()
        em = self.emulator
        sizes = {n: int(v.size) for n, v in em.weights.items()}
        chosen = {n: quantization for n in em.names}
        measured = self.measure(chosen)
        info = {
            "method": f"none: every float32 weight tensor stored as {quantization}",
            "target": None,
            "calibration_images": int(len(self.images)),
            "calibration_bound": round(measured["bound"], 7),
            "calibration_max_abs_diff": round(measured["max_abs_diff"], 7),
            "tensors": {d: (len(em.names) if d == quantization else 0) for d in _LEVELS[quantization]},
            "bytes": {d: (int(sum(sizes.values()) * _BYTES[d]) if d == quantization else 0)
                      for d in _LEVELS[quantization]},
            "weight_bytes": int(sum(sizes.values()) * _BYTES[quantization]),
            "weight_bytes_all_float32": int(4 * sum(sizes.values())),
            "evaluations": 1,
            "seconds": round(time.perf_counter() - t0, 3),
            "levels": chosen,
        }
        return {quantization: [_fnmatch_escape(n) for n in em.names]}, info

    def close(self) -> None:
        self.emulator.close()


def _fnmatch_escape(name: str) -> str:
    """The converter matches map entries with fnmatch: escape ``*?[``."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def export_tfjs(saved_model_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                spec: ModelSpec, quantization: str = "float32",
                input_range: tuple[float, float] = (0.0, 255.0), target: float | None = None,
                float32_reference: str | os.PathLike | None = None, planner=None,
                plan: bool = True, overwrite: bool = False) -> Path:
    """Convert a SavedModel to a TF.js graph model with nsfwkit metadata.

    Args:
        saved_model_dir: from :func:`export_saved_model` (or ``model.export``).
        out_dir: folder to create with ``model.json`` and ``group1-shard*.bin``.
        spec: the model's spec; stored in ``userDefinedMetadata.nsfwkit``.
        quantization: ``float32`` (alias ``none``), ``float16`` or ``uint8``: the cheapest
            storage each weight tensor may get (``uint8`` tensors may be raised to float16 or
            float32, ``float16`` ones to float32), chosen by measurement so that the emulated
            TF.js model stays within ``target`` of float32 (see :class:`_PrecisionPlanner`);
            the choice and its numbers are in the metadata (``precision``). TF.js dequantises
            on load.
        input_range: what the SavedModel's input takes; recorded in the metadata.
        target: worst-case probability error allowed on the calibration images (default:
            :data:`PLAN_MARGIN` x :data:`TOLERANCES` of ``quantization``).
        float32_reference: a float32 conversion of the same SavedModel (the planner reads its
            weights and graph); without it one is made first (a few seconds).
        planner: a ``_PrecisionPlanner`` to reuse (what :func:`export` does for float16 and
            uint8); made from ``float32_reference`` when not given.
        plan: ``False`` skips the plan: every weight tensor is stored as ``quantization``
            (smallest files; plain uint8 moves the default model's probabilities by ~0.2,
            float16 by ~1e-2, beyond :data:`TOLERANCES`). The emulated error is still recorded.
        overwrite: replace an existing non-empty folder (atomically).

    Returns:
        ``out_dir``.
    """
    conversion = _import_converter()
    quantization = _quant(quantization)
    nsfwjs = input_range[1] == 1.0
    metadata = {METADATA_KEY: _metadata(spec, quantization=quantization,
                                        input_range=input_range, nsfwjs=nsfwjs)}
    out_dir = Path(out_dir)
    precision = None
    with _atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with _quiet_tf():
            qmap = None
            if quantization != "float32":
                own = planner is None
                with contextlib.ExitStack() as stack:
                    if own:
                        reference = float32_reference
                        if reference is None:
                            reference = stack.enter_context(tempfile.TemporaryDirectory(
                                prefix="f32-ref-", dir=tmp.parent))
                            conversion.convert_tf_saved_model(str(saved_model_dir), reference)
                        planner = _PrecisionPlanner(Path(reference), input_range=input_range)
                        stack.callback(planner.close)
                    qmap, precision = (planner.plan(quantization, target=target) if plan
                                       else planner.pure(quantization))
            if precision is not None:
                metadata[METADATA_KEY]["precision"] = {k: v for k, v in precision.items() if k != "levels"}
            conversion.convert_tf_saved_model(str(saved_model_dir), str(tmp), metadata=metadata,
                                              quantization_dtype_map=qmap)
        model_json_path = tmp / "model.json"
        model_json = json.loads(model_json_path.read_text(encoding="utf-8"))
        feature = find_node(model_json, layer=spec.last_conv_layer) if spec.last_conv_layer else None
        logits = find_node(model_json, op="Softmax")
        meta = model_json.setdefault("userDefinedMetadata", {}).setdefault(METADATA_KEY, {})
        meta["cam"] = ({"feature_node": feature, "logits_node": logits, "layer": spec.last_conv_layer}
                       if feature and logits else None)
        _write_json(model_json_path, model_json)
    return out_dir


@contextlib.contextmanager
def _quiet_tf():
    """Silence absl/TF INFO chatter from grappler during conversion."""
    import logging

    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclasses.dataclass
class ExportResult:
    """What :func:`export` wrote.

    Attributes:
        out_dir: the export folder.
        saved_model: the SavedModel folder.
        tfjs: quantisation -> graph model folder (input 0-255).
        nsfwjs: quantisation -> graph model folder for nsfwjs (input 0-1); may be empty.
        sizes: rows of :func:`size_table`.
        seconds: step -> wall seconds.
        precision: ``"tfjs"``/``"nsfwjs"`` -> quantisation -> the measured storage plan
            (:meth:`_PrecisionPlanner.plan`): per-dtype tensor counts, weight bytes, the
            calibration error, and ``levels`` (weight name -> ``uint8``/``float16``/``float32``).
    """

    out_dir: Path
    saved_model: Path
    tfjs: dict[str, Path]
    nsfwjs: dict[str, Path]
    sizes: list[dict[str, Any]]
    seconds: dict[str, float]
    precision: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rel = lambda p: str(Path(p).relative_to(self.out_dir))  # noqa: E731
        return {
            "saved_model": rel(self.saved_model),
            "tfjs": {q: rel(p) for q, p in self.tfjs.items()},
            "nsfwjs": {q: rel(p) for q, p in self.nsfwjs.items()},
            "sizes": self.sizes,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def size_table(result: ExportResult | str | os.PathLike) -> list[dict[str, Any]]:
    """One row per exported artefact: ``format``, ``quantization``, ``files``, ``bytes``, ``mb``,
    ``path`` (relative to the export folder)."""
    if not isinstance(result, ExportResult):
        out_dir = Path(result)
        summary = json.loads((out_dir / "export.json").read_text(encoding="utf-8"))
        return summary["sizes"]
    rows = []
    entries = [("saved_model", "float32", result.saved_model)]
    entries += [("tfjs_graph", q, p) for q, p in result.tfjs.items()]
    entries += [("nsfwjs_graph", q, p) for q, p in result.nsfwjs.items()]
    for fmt, quant, folder in entries:
        nbytes, nfiles = _folder_bytes(folder)
        row = {"format": fmt, "quantization": quant, "files": nfiles, "bytes": nbytes,
               "mb": round(nbytes / 1e6, 2), "path": str(Path(folder).relative_to(result.out_dir))}
        if (Path(folder) / "model.json").is_file():
            row.update(weight_composition(folder))
            row["stored_as"] = composition_label(row)
        rows.append(row)
    return rows


def weight_composition(model_dir: str | os.PathLike) -> dict[str, dict[str, int]]:
    """How a TF.js graph model's weights are really stored, read from its ``model.json``.

    A "uint8" or "float16" export is mixed precision (see :class:`_PrecisionPlanner`): this
    says how much of it is.

    Returns:
        ``{"tensors": {dtype: count}, "weight_bytes": {dtype: bytes}}`` over the storage dtypes
        present (``uint8``, ``float16``, ``float32``, ``int32``, ...), largest first.
    """
    model_json = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
    tensors: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    for group in model_json.get("weightsManifest", []):
        for w in group["weights"]:
            dtype = w.get("quantization", {}).get("dtype") or w.get("dtype", "float32")
            count = int(np.prod(w["shape"], dtype=np.int64))
            tensors[dtype] = tensors.get(dtype, 0) + 1
            nbytes[dtype] = nbytes.get(dtype, 0) + count * _BYTES.get(dtype, 4)
    order = sorted(tensors, key=lambda d: -nbytes[d])
    return {"tensors": {d: tensors[d] for d in order}, "weight_bytes": {d: nbytes[d] for d in order}}


_SHORT = {"uint8": "u8", "float16": "f16", "float32": "f32", "int32": "i32"}


def composition_label(row: dict[str, Any]) -> str:
    """``"u8 25 (1.2 MB) / f16 23 (0.9 MB) / f32 81 (5.4 MB)"``: tensors and MB per stored dtype
    of a :func:`size_table` row (empty for rows without weights, e.g. the SavedModel)."""
    tensors, nbytes = row.get("tensors") or {}, row.get("weight_bytes") or {}
    return " / ".join(f"{_SHORT.get(d, d)} {n} ({nbytes.get(d, 0) / 1e6:.1f} MB)"
                      for d, n in tensors.items())


def export(
    model,
    out_dir: str | os.PathLike,
    *,
    spec: ModelSpec,
    quantizations: Sequence[str] = QUANTIZATIONS,
    nsfwjs: bool | None = None,
    nsfwjs_quantizations: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    precision_plan: bool = True,
) -> ExportResult:
    """Export a classifier: SavedModel, TF.js graph models, nsfwjs-ready graph models.

    Args:
        model: a Keras classifier taking raw RGB 0-255 (not modified).
        out_dir: the export folder (layout in the module docstring); built under a temporary
            name and moved into place when complete.
        spec: the model's :class:`~nsfwkit.spec.ModelSpec`.
        quantizations: any of ``float32``/``none``, ``float16``, ``uint8``.
        nsfwjs: also write ``nsfwjs/<q>/`` (input 0-1). Default: only when the classes are
            nsfwjs's five, in its order (nsfwjs hard-codes their names).
        nsfwjs_quantizations: quantisations of the nsfwjs flavour (default: ``quantizations``).
        overwrite: replace an existing ``out_dir`` that is an nsfwkit export (holds
            ``export.json``); any other non-empty folder is refused even with ``overwrite``.
        progress: show a progress bar (default: when stderr is a terminal).
        precision_plan: ``True`` (default): quantised exports are the measured mixed-precision
            plan (within :data:`TOLERANCES`, larger files). ``False``: pure quantisation, every
            weight tensor in the export's dtype (smallest files, larger error; recorded).

    Returns:
        an :class:`ExportResult`; the same summary is in ``out_dir/export.json``.
    """
    from tqdm.auto import tqdm

    quants = list(dict.fromkeys(_quant(q) for q in quantizations))
    if not quants:
        raise ValueError("quantizations is empty")
    if nsfwjs is None:
        nsfwjs = tuple(spec.class_names) == NSFWJS_CLASSES
    nsfwjs_quants = list(dict.fromkeys(_quant(q) for q in (nsfwjs_quantizations or quants)))
    _import_converter()  # fail early, before the slow SavedModel export
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    steps = 1 + len(set(quants) | {"float32"}) + (1 + len(nsfwjs_quants) if nsfwjs else 0)
    bar = tqdm(total=steps, desc=f"export {spec.name}", unit="step",
               disable=not (progress if progress is not None else sys.stderr.isatty()))
    with _atomic_dir(out_dir, overwrite=overwrite) as tmp:
        t0 = time.perf_counter()
        export_saved_model(model, tmp / "saved_model", spec=spec)
        seconds["saved_model"] = time.perf_counter() - t0
        bar.update()
        precision = {"tfjs": _convert_all(tmp / "saved_model", tmp / "tfjs", quants, spec=spec,
                                          input_range=(0.0, 255.0), seconds=seconds,
                                          prefix="tfjs", bar=bar, plan=precision_plan)}
        if nsfwjs:
            with tempfile.TemporaryDirectory(prefix="nsfwjs-sm-") as scratch:
                t0 = time.perf_counter()
                unit = inference_model(model, input_range=(0.0, 1.0), input_name=spec.input_name)
                with _quiet_tf():
                    unit.export(str(Path(scratch) / "sm"), format="tf_saved_model", verbose=False)
                seconds["nsfwjs_saved_model"] = time.perf_counter() - t0
                bar.update()
                precision["nsfwjs"] = _convert_all(
                    Path(scratch) / "sm", tmp / "nsfwjs", nsfwjs_quants, spec=spec,
                    input_range=(0.0, 1.0), seconds=seconds, prefix="nsfwjs", bar=bar,
                    plan=precision_plan)
        spec.save(tmp / "spec.json")
        staged = ExportResult(
            out_dir=tmp, saved_model=tmp / "saved_model",
            tfjs={q: tmp / "tfjs" / q for q in quants},
            nsfwjs={q: tmp / "nsfwjs" / q for q in nsfwjs_quants} if nsfwjs else {},
            sizes=[], seconds=seconds,
        )
        staged.sizes = size_table(staged)
        summary = staged.to_dict()
        summary.update({"model": spec.name, "image_size": spec.image_size,
                        "class_names": list(spec.class_names),
                        "precision_plan": "measured" if precision_plan else "none",
                        "precision": {k: v for k, v in precision.items() if v}})
        _write_json(tmp / "export.json", summary)
    bar.close()
    return ExportResult(
        out_dir=out_dir, saved_model=out_dir / "saved_model",
        tfjs={q: out_dir / "tfjs" / q for q in quants},
        nsfwjs={q: out_dir / "nsfwjs" / q for q in nsfwjs_quants} if nsfwjs else {},
        sizes=staged.sizes, seconds=seconds, precision={k: v for k, v in precision.items() if v},
    )


def _convert_all(saved_model: Path, dest: Path, quants: Sequence[str], *, spec: ModelSpec,
                 input_range: tuple[float, float], seconds: dict[str, float], prefix: str,
                 bar, plan: bool = True) -> dict[str, Any]:
    """Convert one SavedModel to ``dest/<q>`` for each quantisation, float32 first (its graph
    and weights choose the storage of the others; it is made in scratch space if not wanted).

    Returns:
        quantisation -> the precision plan's summary (with ``levels``: weight -> dtype).
    """
    reference = None
    planner = None
    plans: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="f32-ref-", dir=dest.parent) as scratch:
        try:
            for q in ["float32"] + [q for q in quants if q != "float32"]:
                t0 = time.perf_counter()
                target = dest / q if q in quants else Path(scratch) / "float32"
                if q != "float32" and planner is None:
                    with _quiet_tf():
                        planner = _PrecisionPlanner(reference, input_range=input_range)
                    seconds[f"{prefix}_calibration"] = time.perf_counter() - t0
                    t0 = time.perf_counter()
                export_tfjs(saved_model, target, spec=spec, quantization=q, input_range=input_range,
                            float32_reference=reference, planner=planner, plan=plan)
                if q == "float32":
                    reference = target
                else:
                    plans[q] = (planner.plan(q) if plan else planner.pure(q))[1]
                seconds[f"{prefix}_{q}"] = time.perf_counter() - t0
                bar.update()
        finally:
            if planner is not None:
                planner.close()
    return plans


def read_metadata(model_dir: str | os.PathLike) -> dict[str, Any]:
    """``userDefinedMetadata.nsfwkit`` of a TF.js graph model folder (or model.json path)."""
    path = Path(model_dir)
    if path.is_dir():
        path = path / "model.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (not a TF.js model folder?)") from None
    return data.get("userDefinedMetadata", {}).get(METADATA_KEY, {})


def plot_sizes(rows: Sequence[dict[str, Any]]):
    """Bar chart of export sizes in MB (from :func:`size_table`); returns a Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3))
    ax = fig.add_subplot()
    labels = [f"{r['format']}\n{r['quantization']}" for r in rows]
    values = [r["mb"] for r in rows]
    bars = ax.bar(range(len(rows)), values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("MB")
    ax.set_title("Export sizes")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Parity: Keras vs TF.js in Node
# --------------------------------------------------------------------------------------------
def keras_probabilities(model, images: np.ndarray | Sequence[np.ndarray], *,
                        image_size: int | None = None, batch_size: int = 16) -> np.ndarray:
    """Keras probabilities for raw RGB images, resized the nsfwkit/nsfwjs way.

    Args:
        model: a Keras classifier taking raw RGB 0-255.
        images: ``(N, S, S, 3)`` array or a list of ``(H, W, 3)`` arrays of any sizes, 0-255.
        image_size: the model's input side (default: from the model).

    Returns:
        ``float32`` ``(N, classes)``.
    """
    from .images import resize

    size = int(image_size or model.inputs[0].shape[1])
    batch = np.stack([resize(np.asarray(img), size) for img in images]) if len(images) else \
        np.zeros((0, size, size, 3), np.float32)
    return np.asarray(model.predict(batch, batch_size=batch_size, verbose=0), dtype=np.float32)


def _node() -> str:
    node = shutil.which("node")
    if not node:
        raise NodeMissingError("Node.js (>= 20) is not installed; it runs TensorFlow.js")
    if not (paths.repo_root() / "node_modules" / "@tensorflow" / "tfjs-backend-wasm").is_dir():
        raise NodeMissingError(
            f"{paths.repo_root() / 'node_modules'}: @tensorflow/tfjs-backend-wasm missing; run `npm ci`")
    return node


def run_node(script: str | os.PathLike, request: dict[str, Any], *, timeout: float = 300) -> dict:
    """Run one of nsfwkit's ``js/*.mjs`` scripts with a JSON request; return its JSON answer."""
    node = _node()
    with tempfile.TemporaryDirectory(prefix="nsfwkit-node-") as tmp:
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps(request), encoding="utf-8")
        proc = subprocess.run([node, str(script), str(req)], cwd=paths.repo_root(),
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tfjs_probabilities(
    model_dir: str | os.PathLike,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    preprocessed: bool = False,
    backend: str = "wasm",
    gradcam: bool = False,
    dump_inputs: str | os.PathLike | None = None,
    repeat: int = 0,
) -> dict[str, Any]:
    """Run a TF.js graph model in Node (``js/tfjs_predict.mjs``) on images decoded in Python.

    Args:
        model_dir: a graph model folder from :func:`export_tfjs`.
        images: raw RGB ``uint8`` ``(H, W, 3)`` arrays of any sizes (preprocessed in JavaScript
            by ``nsfwkit/web/classifier.js``, the web view's code), or with
            ``preprocessed=True`` float32 model inputs ``(N, S, S, 3)`` fed as they are.
        backend: ``wasm`` (default) or ``cpu`` (pure JS, slow).
        gradcam: also return the TF.js Grad-CAM of each image's top class.
        dump_inputs: folder where the script writes each preprocessed input as
            ``<i>.f32`` (float32 S*S*3), to compare preprocessing with Python.
        repeat: extra timed runs per image.

    Returns:
        ``{"probs": float32 (N, classes), "cams": list of (h, w) float32 arrays or None,
        "metadata": dict, "ms_per_image": float | None, "load_ms": float, "backend": str}``.
    """
    items = []
    with tempfile.TemporaryDirectory(prefix="nsfwkit-px-") as tmp:
        for i, img in enumerate(images):
            arr = np.asarray(img)
            if preprocessed:
                data, dtype = np.ascontiguousarray(arr, dtype="<f4"), "float32"
            else:
                if arr.dtype != np.uint8:
                    raise ValueError("raw images must be uint8 (H, W, 3); pass preprocessed=True "
                                     "for float model inputs")
                data, dtype = np.ascontiguousarray(arr), "uint8"
            if arr.ndim != 3 or arr.shape[-1] != 3:
                raise ValueError(f"image {i}: expected (H, W, 3), got {arr.shape}")
            file = Path(tmp) / f"{i}.px"
            data.tofile(file)
            items.append({"name": str(i), "width": int(arr.shape[1]), "height": int(arr.shape[0]),
                          "file": str(file), "dtype": dtype})
        answer = run_node(paths.repo_root() / "js" / "tfjs_predict.mjs", {
            "model_dir": str(Path(model_dir).resolve()), "backend": backend, "images": items,
            "gradcam": gradcam, "repeat": int(repeat),
            "dump_inputs": str(Path(dump_inputs).resolve()) if dump_inputs else None,
        })
    results = answer["results"]
    cams = None
    if gradcam:
        cams = [np.asarray(r["cam"]["heatmap"], np.float32).reshape(r["cam"]["height"], r["cam"]["width"])
                if "cam" in r else None for r in results]
    return {
        "probs": np.asarray([r["probs"] for r in results], np.float32).reshape(len(results), -1),
        "cams": cams, "metadata": answer["metadata"], "ms_per_image": answer["ms_per_image"],
        "load_ms": answer["load_ms"], "backend": answer["backend"],
    }


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """Keras vs TF.js on the same images.

    Attributes:
        quantization: of the TF.js model.
        max_abs_diff: max over images and classes of |p_keras - p_tfjs|.
        top1_agree: fraction of images whose arg-max agrees (1.0 required).
        tolerance: the bar for this quantisation (:data:`TOLERANCES`).
        passed: ``max_abs_diff <= tolerance and top1_agree == 1``.
        keras: ``(N, classes)`` Keras probabilities; ``tfjs``: the same from TF.js.
    """

    quantization: str
    max_abs_diff: float
    top1_agree: float
    tolerance: float
    passed: bool
    keras: np.ndarray
    tfjs: np.ndarray

    def summary(self) -> dict[str, Any]:
        return {"quantization": self.quantization, "max_abs_diff": float(self.max_abs_diff),
                "top1_agree": float(self.top1_agree), "tolerance": self.tolerance,
                "passed": bool(self.passed), "images": int(len(self.keras))}


def compare(keras_probs: np.ndarray, tfjs_probs: np.ndarray, *, quantization: str = "float32",
            tolerance: float | None = None) -> ParityReport:
    """Build a :class:`ParityReport` from two ``(N, classes)`` probability arrays."""
    quantization = _quant(quantization)
    a, b = np.asarray(keras_probs, np.float64), np.asarray(tfjs_probs, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: keras {a.shape} vs tfjs {b.shape}")
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    agree = float(np.mean(a.argmax(-1) == b.argmax(-1))) if len(a) else 1.0
    tol = float(tolerance if tolerance is not None else TOLERANCES[quantization])
    return ParityReport(quantization, diff, agree, tol, diff <= tol and agree == 1.0,
                        a.astype(np.float32), b.astype(np.float32))


def check_parity(model, model_dir: str | os.PathLike, images: Sequence[np.ndarray], *,
                 tolerance: float | None = None, backend: str = "wasm") -> ParityReport:
    """Classify raw images with Keras and with the TF.js export in Node; compare.

    The TF.js side preprocesses in JavaScript (the web view's code), so this checks the
    preprocessing as well as the network.

    Args:
        model: the Keras classifier that was exported.
        model_dir: a TF.js graph model folder (either input range; read from its metadata).
        images: raw RGB ``uint8`` ``(H, W, 3)`` arrays of any sizes.
        tolerance: override the per-quantisation bar.
    """
    meta = read_metadata(model_dir)
    keras_p = keras_probabilities(model, images, image_size=meta.get("image_size"))
    tfjs_p = tfjs_probabilities(model_dir, images, backend=backend)["probs"]
    return compare(keras_p, tfjs_p, quantization=meta.get("quantization", "float32"),
                   tolerance=tolerance)


def nsfwjs_probabilities(model_dir: str | os.PathLike, images: Sequence[np.ndarray], *,
                         image_size: int | None = None, backend: str = "wasm") -> np.ndarray:
    """Classify raw RGB images with the real ``nsfwjs`` package loading ``model_dir``.

    ``model_dir`` is served on 127.0.0.1 for the duration and loaded the documented nsfwjs way,
    ``nsfwjs.load(url, {type: "graph", size})`` (``js/nsfwjs_load.mjs``); nsfwjs does its own
    preprocessing. Use an ``nsfwjs/<q>/`` export (input 0-1).

    Returns:
        ``float32`` ``(N, 5)`` in nsfwjs's class order (:data:`~nsfwkit.spec.NSFWJS_CLASSES`).
    """
    from . import serve

    size = int(image_size or read_metadata(model_dir).get("image_size", 224))
    with tempfile.TemporaryDirectory(prefix="nsfwkit-px-") as tmp:
        items = []
        for i, img in enumerate(images):
            arr = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
            arr.tofile(Path(tmp) / f"{i}.rgb")
            items.append({"name": str(i), "width": int(arr.shape[1]), "height": int(arr.shape[0]),
                          "file": str(Path(tmp) / f"{i}.rgb")})
        server = serve.serve_in_thread(Path(model_dir))
        try:
            answer = run_node(paths.repo_root() / "js" / "nsfwjs_load.mjs",
                              {"url": server.url, "size": size, "images": items, "backend": backend})
        finally:
            server.shutdown()
            server.server_close()
    return np.asarray([[r["probs"][c] for c in NSFWJS_CLASSES] for r in answer["results"]], np.float32)
