"""Internal activations: what chosen layers output for an image, from one forward pass.

:func:`activations` runs a single sub-model that returns every chosen layer's output *and* the
model's prediction (as the original tfjs-examples ``visualize-convnet`` did), so the maps and
the probabilities always belong to the same pass. Helpers turn one layer's maps into images:
a grid of the first channels, one image per channel, and the channels most active for this
image, and the dataset images that activate a channel most (:func:`top_activating_examples`, the
real-image half of a Distill / OpenAI Microscope feature view).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .layers import as_model_input, default_filter_layers, forward_fn, layer_path
from .pixels import colorize, grid, normalize_channel, upscale

__all__ = [
    "ActivationResult",
    "TopExamples",
    "activations",
    "channel_means",
    "top_activating_examples",
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


@dataclasses.dataclass(frozen=True)
class TopExamples:
    """The images that activate one channel most, highest first.

    Attributes:
        indices: ``int64`` ``(k,)`` positions in the ``images`` given.
        scores: ``float32`` ``(k,)`` the channel's mean activation on each.
        maps: ``float32`` ``(k, h, w)`` the channel's activation map on each (the layer's resolution).
        layer: layer path.
        channel: channel index.
    """

    indices: np.ndarray
    scores: np.ndarray
    maps: np.ndarray
    layer: str
    channel: int


def _model_batch(model, images) -> np.ndarray:
    """A float32 model-input batch from an ``(N, H, W, C)`` array or a sequence of ``(H, W, C)`` images."""
    if isinstance(images, np.ndarray):
        return as_model_input(model, images)[0]
    return np.concatenate([as_model_input(model, image)[0] for image in images])


def _layer_maps(model, path: str, images, batch_size: int):
    """Yield the layer's ``(n, h, w, C)`` maps, ``batch_size`` images at a time."""
    fn = forward_fn(model, [path], head=None)
    for start in range(0, len(images), batch_size):
        maps = fn(_model_batch(model, images[start : start + batch_size]))[0].numpy()
        if maps.ndim != 4:
            raise ValueError(f"layer {path!r} outputs shape {maps.shape}; expected a 4-D feature map")
        yield maps


def channel_means(model, images, *, layer: str, batch_size: int = 32) -> np.ndarray:
    """Every image's mean activation in every channel of ``layer`` (inference mode).

    Args:
        model: a Keras functional classifier taking raw 0-255 images.
        images: ``(N, H, W, C)`` raw 0-255, or a sequence of ``(H, W, C)`` images of any sizes
            (each resized to the model's input size).
        layer: layer name or path (a 4-D feature map).
        batch_size: images per forward pass.

    Returns:
        ``float32`` ``(N, channels)``.

    Raises:
        LayerNotFoundError: no such layer.
        ValueError: no images, or a layer that is not a 4-D feature map.
    """
    if len(images) == 0:
        raise ValueError("images is empty")
    path = layer_path(model, layer)
    return np.concatenate([m.mean(axis=(1, 2)) for m in _layer_maps(model, path, images, batch_size)]).astype(
        np.float32)


def top_activating_examples(model, images, *, layer: str, channel: int, count: int = 8,
                            means: np.ndarray | None = None, batch_size: int = 32) -> TopExamples:
    """The ``count`` images whose mean activation in ``channel`` of ``layer`` is highest, with their maps.

    Args:
        model: a Keras functional classifier taking raw 0-255 images.
        images: as for :func:`channel_means`.
        layer: layer name or path (a 4-D feature map).
        channel: the channel.
        count: how many images (at most ``N``); ties keep the images' order.
        means: :func:`channel_means` of these images at this layer, when already computed (one
            pass over a dataset then serves every channel).
        batch_size: images per forward pass.

    Returns:
        A :class:`TopExamples`.

    Raises:
        LayerNotFoundError: no such layer.
        ValueError: no images, a channel out of range, or ``means`` of the wrong shape.
    """
    path = layer_path(model, layer)
    means = channel_means(model, images, layer=path, batch_size=batch_size) if means is None else np.asarray(means)
    if means.ndim != 2 or means.shape[0] != len(images):
        raise ValueError(f"means has shape {means.shape}; expected ({len(images)}, channels)")
    if not 0 <= int(channel) < means.shape[1]:
        raise ValueError(f"channel {channel} out of range for {path!r} ({means.shape[1]} channels)")
    channel = int(channel)
    order = np.argsort(-means[:, channel], kind="stable")[: max(0, int(count))]
    chosen = images[order] if isinstance(images, np.ndarray) else [images[i] for i in order]
    maps = [m[..., channel] for m in _layer_maps(model, path, chosen, batch_size)] if len(order) else []
    return TopExamples(indices=order.astype(np.int64), scores=means[order, channel].astype(np.float32),
                       maps=np.concatenate(maps).astype(np.float32) if maps else np.zeros((0, 0, 0), np.float32),
                       layer=path, channel=channel)


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
