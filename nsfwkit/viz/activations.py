"""Internal activations: what chosen layers output for an image, from one forward pass.

:func:`activations` runs a single sub-model that returns every chosen layer's output *and* the
model's prediction (as the original tfjs-examples ``visualize-convnet`` did), so the maps and
the probabilities always belong to the same pass. Helpers turn one layer's maps into images:
a grid of the first channels, one image per channel, and the channels most active for this
image.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .layers import as_model_input, default_filter_layers, forward_fn, layer_path
from .pixels import colorize, grid, normalize_channel, upscale

__all__ = [
    "ActivationResult",
    "activations",
    "most_active_channels",
    "channel_image",
    "activation_grid",
]


@dataclasses.dataclass(frozen=True)
class ActivationResult:
    """Outputs of one forward pass.

    Attributes:
        layers: layer path -> ``float32`` ``(N, h, w, C)`` (or whatever rank the layer outputs),
            in the order requested.
        probabilities: ``float32`` ``(N, classes)``, the model's own output.
    """

    layers: dict[str, np.ndarray]
    probabilities: np.ndarray


def activations(model, images, *, layers: Sequence[str] | str | None = None) -> ActivationResult:
    """Chosen layers' outputs and the prediction, from one forward pass (inference mode).

    Args:
        model: a Keras functional classifier taking raw 0-255 images.
        images: ``(N, H, W, C)`` or ``(H, W, C)`` raw 0-255 (resized to the model's input size).
        layers: layer names/paths; default a spread from early to late layers
            (:func:`~nsfwkit.viz.layers.default_filter_layers`).

    Returns:
        An :class:`ActivationResult`.

    Raises:
        LayerNotFoundError: a layer is not in the model.
    """
    if isinstance(layers, str):
        layers = [layers]
    paths = default_filter_layers(model) if layers is None else [layer_path(model, l) for l in layers]
    x, _ = as_model_input(model, images)
    fn = forward_fn(model, paths, head="output")
    chunks: list[list[np.ndarray]] = []
    for start in range(0, x.shape[0], 16):
        chunks.append([t.numpy() for t in fn(x[start : start + 16])])
    outs = [np.concatenate([c[i] for c in chunks]) for i in range(len(paths) + 1)]
    return ActivationResult(layers=dict(zip(paths, outs[:-1])), probabilities=outs[-1])


def most_active_channels(maps: np.ndarray, *, count: int = 8) -> np.ndarray:
    """Channel indices with the highest mean activation, highest first.

    Args:
        maps: one image's maps ``(h, w, C)``.
        count: how many to return (at most ``C``).

    Returns:
        ``int64`` ``(min(count, C),)``; ties keep channel order.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"expected one image's maps (h, w, C), got shape {maps.shape}")
    means = maps.reshape(-1, maps.shape[-1]).mean(axis=0)
    return np.argsort(-means, kind="stable")[: min(count, maps.shape[-1])].astype(np.int64)


def channel_image(values: np.ndarray, *, colormap: str = "viridis", min_side: int = 112) -> np.ndarray:
    """One channel ``(h, w)`` as a min-max scaled, colour-mapped ``uint8`` RGB image.

    Small maps are upscaled (nearest neighbour, integer factor) so the short side is at least
    ``min_side`` pixels.
    """
    return upscale(colorize(normalize_channel(values), colormap=colormap), min_side=min_side)


def activation_grid(maps: np.ndarray, *, channels: Sequence[int] | int = 16, columns: int | None = None,
                    colormap: str = "viridis", min_side: int = 56) -> np.ndarray:
    """A grid image of some channels of one image's maps ``(h, w, C)``; ``uint8`` RGB.

    Args:
        channels: how many leading channels, or explicit channel indices.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"expected one image's maps (h, w, C), got shape {maps.shape}")
    if isinstance(channels, (int, np.integer)):
        channels = range(min(int(channels), maps.shape[-1]))
    tiles = [channel_image(maps[..., c], colormap=colormap, min_side=min_side) for c in channels]
    return grid(tiles, columns=columns)
