"""One map per class for one image, on a scale that does not mislead.

Normalising each class's map to its own maximum makes a class the model gives p = 0.00 look as
hot as the top class. Dividing every class's raw map (the method's own units: ``relu`` of the
weighted activations for a CAM, gradient magnitude for pixel methods) by one common maximum
does not fix that on its own: raw maps are in logit-evidence units, and a class can gather more
positive evidence than the top class and still lose the softmax (on the sample cat, Porn at
p = 0.063 outshines Neutral at p = 0.94 on that scale). :func:`class_maps` therefore offers
three scales, each labelled in :attr:`ClassMaps.scale_label`:

* ``"weighted"`` (default, "evidence × probability"): map ``c`` is
  ``raw_c * p_c / max_k(p_k * peak_k)`` (``peak_k`` the raw maximum of class ``k``), so a map is
  bright only where the class has evidence *and* the model gives it probability; the brightest
  pixel of all the maps is 1.
* ``"shared"`` ("raw shared scale"): every raw map divided by one common maximum, the largest
  ``peak_k``: brightness compares raw evidence across classes, whatever their probability.
* ``"per_map"``: each map stretched to its own maximum (brightness not comparable across classes).

Every map gets a caption with the class probability and the raw range, and a map that is
empty (raw maximum 0, or below :data:`EMPTY_FRACTION` of the largest class's) says why.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .attributions import PIXEL_METHODS, explain
from .layers import last_conv_layer, layer_path

__all__ = ["EMPTY_FRACTION", "SCALES", "SCALE_NAMES", "ClassMaps", "class_maps", "plot_class_maps"]

#: The scales, the default first.
SCALES = ("weighted", "shared", "per_map")
#: How each scale is named in captions and manifests.
SCALE_NAMES = {"weighted": "evidence × probability", "shared": "raw shared scale", "per_map": "per-map scale"}
#: A map whose raw maximum is at most this fraction of the largest class's counts as empty.
EMPTY_FRACTION = 1e-3


@dataclasses.dataclass(frozen=True)
class ClassMaps:
    """Per-class maps of one image.

    Attributes:
        maps: ``float32`` ``(C, H, W)`` in ``[0, 1]`` on ``scale``.
        raw: ``float32`` ``(C, H, W)`` >= 0, the maps before scaling.
        scale: one of :data:`SCALES`.
        divisor: ``(C,)`` what each raw map was divided by (one value repeated when ``"shared"``;
            ``max_k(p_k * peak_k) / p_c`` when ``"weighted"``, ``inf`` for a class with ``p_c = 0``).
        class_index: ``int`` ``(C,)`` the classes.
        probabilities: ``float32`` ``(C,)`` the image's probability of each of those classes.
        empty: ``bool`` ``(C,)`` maps with (next to) no positive evidence.
        captions: one line per map: class, probability, raw range, and why a map is empty.
        method: the method.
        layer: its layer (``"input"`` for pixel methods).
        completeness_error, score_difference: ``integrated_gradients`` only, ``float64`` ``(C,)``
            (:class:`~nsfwkit.viz.attributions.AttributionResult`); None for the other methods.
    """

    maps: np.ndarray
    raw: np.ndarray
    scale: str
    divisor: np.ndarray
    class_index: np.ndarray
    probabilities: np.ndarray
    empty: np.ndarray
    captions: tuple[str, ...]
    method: str
    layer: str
    completeness_error: np.ndarray | None = None
    score_difference: np.ndarray | None = None

    @property
    def scale_label(self) -> str:
        """How to read the brightness (for a figure's title)."""
        if self.scale == "weighted":
            likely = self.probabilities > 0
            top = float((self.divisor[likely] * self.probabilities[likely]).max()) if likely.any() else 1.0
            return (f"evidence × probability: raw × p / {top:.3g} "
                    "(a dark map = little evidence or a low probability)")
        if self.scale == "shared":
            return (f"raw shared scale: raw / {float(self.divisor.max()):.3g} for every class "
                    "(evidence in logit units, whatever the class's probability)")
        return "per-map scale: each map stretched to its own maximum (brightness not comparable across classes)"


def _why_empty(method: str, layer: str, last: str | None) -> str:
    if method in PIXEL_METHODS:
        return "empty: the class score has no gradient at the pixels here"
    if last is not None and layer != last:
        return f"empty: the class gradient barely reaches {layer}; try the last conv layer ({last})"
    return f"empty: no positive evidence for this class at {layer}"


def _divisors(scale: str, peaks: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """What each class's raw map is divided by on ``scale`` (see the module docstring)."""
    if scale == "per_map":
        return np.where(peaks > 0, peaks, 1.0)
    if scale == "shared":
        top = float(peaks.max())
        return np.full(peaks.shape, top if top > 0 else 1.0)
    top = float((probs * peaks).max())
    if top <= 0:
        return np.ones(peaks.shape)
    with np.errstate(divide="ignore"):
        return np.where(probs > 0, top / np.where(probs > 0, probs, 1.0), np.inf)


def class_maps(
    model,
    image,
    *,
    method: str = "grad_cam",
    layer=None,
    classes: Sequence[int] | None = None,
    scale: str = "weighted",
    class_names: Sequence[str] | None = None,
    **options,
) -> ClassMaps:
    """One map per class of ``image``, scaled honestly.

    Args:
        model: the classifier (raw 0-255 input).
        image: ``(H, W, C)`` raw 0-255.
        method: any of :data:`~nsfwkit.viz.attributions.ALL_METHODS`.
        layer: for CAMs and ``layer_cam`` (default the last conv-like layer).
        classes: class indices (default all).
        scale: ``"weighted"`` (default, evidence × probability), ``"shared"`` (raw shared scale)
            or ``"per_map"``; see the module docstring.
        class_names: names for the captions (default ``class_<i>``).
        **options: passed to the method (e.g. ``max_channels`` for Score-CAM).

    Returns:
        A :class:`ClassMaps`.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    arr = np.asarray(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError("class_maps takes one image")
        arr = arr[0]
    count = int(model.outputs[0].shape[-1])
    classes = list(range(count)) if classes is None else [int(c) for c in classes]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(count)]
    batch = np.repeat(arr[None], len(classes), axis=0)
    if method not in PIXEL_METHODS and layer is not None:
        layer = layer_path(model, layer)
    result = explain(model, batch, method=method, class_index=classes, layer=layer, **options)
    raw = np.asarray(result.raw, np.float32)
    peaks = raw.reshape(len(classes), -1).max(axis=1).astype(np.float64)
    top = float(peaks.max())
    probs = result.probabilities[np.arange(len(classes)), classes].astype(np.float32)
    divisor = _divisors(scale, peaks, probs.astype(np.float64))
    maps = np.clip(raw / divisor[:, None, None], 0.0, 1.0).astype(np.float32)
    empty = peaks <= EMPTY_FRACTION * top if top > 0 else np.ones(len(classes), bool)
    last = None if method in PIXEL_METHODS else last_conv_layer(model)
    captions = []
    for i, c in enumerate(classes):
        name = names[c] if c < len(names) else f"class_{c}"
        low = float(raw[i].min())
        text = f"{name} p={probs[i]:.2f}, raw [{low:.3g}, {peaks[i]:.3g}]"
        if empty[i]:
            text += "; " + _why_empty(method, result.layer, last)
        captions.append(text)
    return ClassMaps(maps=maps, raw=raw, scale=scale, divisor=divisor.astype(np.float32),
                     class_index=np.asarray(classes, np.int64), probabilities=probs, empty=np.asarray(empty),
                     captions=tuple(captions), method=method, layer=result.layer,
                     completeness_error=getattr(result, "completeness_error", None),
                     score_difference=getattr(result, "score_difference", None))


def plot_class_maps(image: np.ndarray, result: ClassMaps, *, alpha: float = 0.6):
    """The image, then one overlay per class with its caption; the scale in the title."""
    import textwrap

    from .plot import plot_cam

    fig = plot_cam(image, result.maps, titles=["\n".join(textwrap.wrap(c, 32)) for c in result.captions], alpha=alpha)
    fig.suptitle(f"{result.method} at {result.layer}: {result.scale_label}", fontsize=9)
    return fig
