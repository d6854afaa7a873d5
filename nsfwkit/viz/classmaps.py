"""One map per class for one image, on a scale that does not mislead.

Normalising each class's map to its own maximum makes a class the model gives p = 0.00 look as
hot as the top class. :func:`class_maps` therefore divides every class's raw map (the method's
own units: ``relu`` of the weighted activations for a CAM, gradient magnitude for pixel
methods) by **one common maximum** across the classes by default (``scale="shared"``), so a
class with little evidence is dark; ``scale="per_map"`` gives the per-map stretch, labelled as
such. Every map gets a caption with the class probability and the raw range, and a map that is
empty (raw maximum 0, or below :data:`EMPTY_FRACTION` of the largest class's) says why.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .attributions import PIXEL_METHODS, explain
from .layers import last_conv_layer, layer_path

__all__ = ["EMPTY_FRACTION", "SCALES", "ClassMaps", "class_maps", "plot_class_maps"]

#: The two scales.
SCALES = ("shared", "per_map")
#: A map whose raw maximum is at most this fraction of the largest class's counts as empty.
EMPTY_FRACTION = 1e-3


@dataclasses.dataclass(frozen=True)
class ClassMaps:
    """Per-class maps of one image.

    Attributes:
        maps: ``float32`` ``(C, H, W)`` in ``[0, 1]`` on ``scale``.
        raw: ``float32`` ``(C, H, W)`` >= 0, the maps before scaling.
        scale: ``"shared"`` or ``"per_map"``.
        divisor: ``(C,)`` what each raw map was divided by (one value repeated when shared).
        class_index: ``int`` ``(C,)`` the classes.
        probabilities: ``float32`` ``(C,)`` the image's probability of each of those classes.
        empty: ``bool`` ``(C,)`` maps with (next to) no positive evidence.
        captions: one line per map: class, probability, raw range, and why a map is empty.
        method: the method.
        layer: its layer (``"input"`` for pixel methods).
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

    @property
    def scale_label(self) -> str:
        """How to read the brightness (for a figure's title)."""
        if self.scale == "shared":
            return f"shared scale: raw / {float(self.divisor.max()):.3g} for every class (a dark map = little evidence)"
        return "per-map scale: each map stretched to its own maximum (brightness not comparable across classes)"


def _why_empty(method: str, layer: str, last: str | None) -> str:
    if method in PIXEL_METHODS:
        return "empty: the class score has no gradient at the pixels here"
    if last is not None and layer != last:
        return f"empty: the class gradient barely reaches {layer}; try the last conv layer ({last})"
    return f"empty: no positive evidence for this class at {layer}"


def class_maps(
    model,
    image,
    *,
    method: str = "grad_cam",
    layer=None,
    classes: Sequence[int] | None = None,
    scale: str = "shared",
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
        scale: ``"shared"`` (default) or ``"per_map"``.
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
    divisor = np.full(len(classes), top if top > 0 else 1.0) if scale == "shared" else np.where(peaks > 0, peaks, 1.0)
    maps = np.clip(raw / divisor[:, None, None], 0.0, 1.0).astype(np.float32)
    empty = peaks <= EMPTY_FRACTION * top if top > 0 else np.ones(len(classes), bool)
    probs = result.probabilities[np.arange(len(classes)), classes].astype(np.float32)
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
                     captions=tuple(captions), method=method, layer=result.layer)


def plot_class_maps(image: np.ndarray, result: ClassMaps, *, alpha: float = 0.6):
    """The image, then one overlay per class with its caption; the scale in the title."""
    import textwrap

    from .plot import plot_cam

    fig = plot_cam(image, result.maps, titles=["\n".join(textwrap.wrap(c, 32)) for c in result.captions], alpha=alpha)
    fig.suptitle(f"{result.method} at {result.layer}: {result.scale_label}", fontsize=9)
    return fig
