"""Parity: Keras vs TF.js (our exports, run in Node) and Keras vs nsfwjs's own models.

:func:`check_parity` classifies the same raw images with the Keras model and with its TF.js
export (preprocessed in JavaScript by the web view's code, so the preprocessing is checked as
well as the network) and compares them against the bar of the export's quantisation
(:data:`~nsfwkit.convert.TOLERANCES`). :func:`compare_with_nsfwjs` compares a Keras model with
the real nsfwjs package on the same pixels (the check of :mod:`nsfwkit.zoo`'s import). The runs
in Node go through :mod:`~nsfwkit.convert.node`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .layout import TOLERANCES, _quant, read_metadata
from .node import run_nsfwjs, tfjs_probabilities

__all__ = ["ParityReport", "keras_probabilities", "compare", "check_parity", "compare_with_nsfwjs"]


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
    from ..images import resize

    size = int(image_size or model.inputs[0].shape[1])
    batch = np.stack([resize(np.asarray(img), size) for img in images]) if len(images) else \
        np.zeros((0, size, size, 3), np.float32)
    return np.asarray(model.predict(batch, batch_size=batch_size, verbose=0), dtype=np.float32)


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


def compare_with_nsfwjs(model, spec, images: Mapping[str, np.ndarray], *, nsfwjs_model: str | None = None) -> dict:
    """Max |Δp| and top-1 agreement between a Keras model and nsfwjs on the same images.

    Returns:
        ``{"max_abs_diff": float, "top1_agree": bool, "per_image": {name: max diff}, "keras": (N, C),
        "nsfwjs": (N, C)}``.
    """
    from ..classify import predict
    from ..images import resize

    js = run_nsfwjs(images, model=nsfwjs_model or spec.name)
    theirs = np.array([[r["probs"][c] for c in spec.class_names] for r in js["results"]])
    ours = predict(model, np.stack([resize(img, spec.image_size) for img in images.values()]))
    diff = np.abs(ours - theirs).max(axis=1)
    return {
        "max_abs_diff": float(diff.max()),
        "top1_agree": bool((ours.argmax(1) == theirs.argmax(1)).all()),
        "per_image": dict(zip(images, diff.tolist(), strict=True)),
        "keras": ours,
        "nsfwjs": theirs,
    }
