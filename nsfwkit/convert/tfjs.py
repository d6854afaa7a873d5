"""TensorFlow.js graph models: SavedModel -> ``model.json`` + weight shards, with nsfwkit metadata.

Every ``model.json`` carries ``userDefinedMetadata.nsfwkit``: class names, input size, input
range, resize method, NSFW classes and threshold, quantisation, the measured precision plan of a
quantised export (:mod:`~nsfwkit.convert.precision`), and the graph node names of the last conv
features and pre-softmax logits (for Grad-CAM in TF.js, :func:`find_node`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ..fileio import write_json
from ..spec import ModelSpec
from ._converter import TFJS_CONVERTER_VERSION, _import_converter, _quiet_tf
from .layout import METADATA_FORMAT, METADATA_KEY, _atomic_dir, _quant
from .precision import _PrecisionPlanner

__all__ = ["export_tfjs", "find_node"]


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


def export_tfjs(saved_model_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                spec: ModelSpec, quantization: str = "float32",
                input_range: tuple[float, float] = (0.0, 255.0), target: float | None = None,
                float32_reference: str | os.PathLike | None = None, planner=None,
                plan: bool = True, overwrite: bool = False) -> Path:
    """Convert a SavedModel to a TF.js graph model with nsfwkit metadata.

    Args:
        saved_model_dir: from :func:`~nsfwkit.convert.export_saved_model` (or ``model.export``).
        out_dir: folder to create with ``model.json`` and ``group1-shard*.bin``.
        spec: the model's spec; stored in ``userDefinedMetadata.nsfwkit``.
        quantization: ``float32`` (alias ``none``), ``float16`` or ``uint8``: the cheapest
            storage each weight tensor may get (``uint8`` tensors may be raised to float16 or
            float32, ``float16`` ones to float32), chosen by measurement so that the emulated
            TF.js model stays within ``target`` of float32 (see :class:`~nsfwkit.convert.precision._PrecisionPlanner`);
            the choice and its numbers are in the metadata (``precision``). TF.js dequantises
            on load.
        input_range: what the SavedModel's input takes; recorded in the metadata.
        target: worst-case probability error allowed on the calibration images (default:
            :data:`PLAN_MARGIN` x :data:`TOLERANCES` of ``quantization``).
        float32_reference: a float32 conversion of the same SavedModel (the planner reads its
            weights and graph); without it one is made first (a few seconds).
        planner: a ``_PrecisionPlanner`` to reuse (what :func:`~nsfwkit.convert.export` does for float16 and
            uint8); made from ``float32_reference`` when not given.
        plan: ``False`` skips the plan: every weight tensor is stored as ``quantization``
            (smallest files; plain uint8 moves the default model's probabilities by ~0.2,
            float16 by ~1e-2, beyond :data:`TOLERANCES`). The emulated error is still recorded.
        overwrite: replace an existing non-empty folder (atomically).

    Returns:
        ``out_dir``.
    """
    _export_tfjs(saved_model_dir, out_dir, spec=spec, quantization=quantization,
                 input_range=input_range, target=target, float32_reference=float32_reference,
                 planner=planner, plan=plan, overwrite=overwrite)
    return Path(out_dir)


def _export_tfjs(saved_model_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                 spec: ModelSpec, quantization: str, input_range: tuple[float, float],
                 target: float | None, float32_reference: str | os.PathLike | None, planner,
                 plan: bool, overwrite: bool) -> dict[str, Any] | None:
    """:func:`export_tfjs`, returning the precision plan's summary (with ``levels``: weight ->
    dtype; ``None`` for float32), so that :func:`~nsfwkit.convert.export` need not ask again."""
    conversion = _import_converter()
    quantization = _quant(quantization)
    nsfwjs = input_range[1] == 1.0
    metadata = {METADATA_KEY: _metadata(spec, quantization=quantization,
                                        input_range=input_range, nsfwjs=nsfwjs)}
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
        write_json(model_json_path, model_json)
    return precision
