"""Images and figures for the visualisations: colormaps, overlays, grids, PNG bytes.

Array helpers return ``uint8`` RGB arrays (what gets written as PNG); ``plot_*`` functions return
``matplotlib.figure.Figure`` objects (created without pyplot's global state, Agg-safe).
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np

__all__ = [
    "DEFAULT_COLORMAP",
    "colorize",
    "overlay",
    "to_uint8",
    "normalize_channel",
    "grid",
    "png_bytes",
    "save_png",
    "save_figure",
    "plot_cam",
    "plot_filters",
    "plot_activations",
    "plot_most_active",
]

#: Perceptually uniform colormap used for heatmaps and activation maps.
DEFAULT_COLORMAP = "inferno"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in ``[0, 1]`` (or already 0-255 ``uint8``) as ``uint8`` 0-255."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def colorize(values: np.ndarray, *, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Map ``(H, W)`` values in ``[0, 1]`` through a matplotlib colormap to ``uint8`` ``(H, W, 3)``."""
    import matplotlib

    cmap = matplotlib.colormaps[colormap]
    return to_uint8(cmap(np.clip(np.asarray(values, np.float32), 0.0, 1.0))[..., :3])


def overlay(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.6,
            colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Blend a heatmap over an image, more opaque where the map is high.

    Args:
        image: ``(H, W, 3)`` 0-255 (any dtype).
        cam: ``(H, W)`` in ``[0, 1]`` (resized to the image if needed).
        alpha: the heatmap's opacity at map value 1.

    Returns:
        ``uint8`` ``(H, W, 3)``.
    """
    img = np.asarray(image, np.float32)
    heat = np.asarray(cam, np.float32)
    if heat.shape != img.shape[:2]:
        import tensorflow as tf

        heat = tf.image.resize(heat[..., None], img.shape[:2]).numpy()[..., 0]
    color = colorize(heat, colormap=colormap).astype(np.float32)
    weight = alpha * np.clip(heat, 0, 1)[..., None]
    return np.clip(np.rint(img * (1 - weight) + color * weight), 0, 255).astype(np.uint8)


def normalize_channel(values: np.ndarray) -> np.ndarray:
    """Min-max scale a ``(H, W)`` map to ``[0, 1]`` (a constant map becomes 0)."""
    arr = np.asarray(values, np.float32)
    low, high = float(arr.min()), float(arr.max())
    if high - low <= 1e-12:
        return np.zeros_like(arr)
    return (arr - low) / (high - low)


def grid(tiles: Sequence[np.ndarray] | np.ndarray, *, columns: int | None = None, pad: int = 2,
         background: int = 255) -> np.ndarray:
    """Tile equally sized ``uint8`` RGB images ``(h, w, 3)`` into one ``uint8`` image."""
    tiles = [np.asarray(t) for t in tiles]
    if not tiles:
        raise ValueError("grid needs at least one tile")
    h, w = tiles[0].shape[:2]
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    out = np.full((rows * h + (rows + 1) * pad, columns * w + (columns + 1) * pad, 3), background, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        tile = tile if tile.ndim == 3 else np.repeat(tile[..., None], 3, axis=-1)
        out[y : y + h, x : x + w] = to_uint8(tile)[..., :3]
    return out


def upscale(image: np.ndarray, *, min_side: int = 112) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor so the short side is >= ``min_side``."""
    h, w = image.shape[:2]
    factor = max(1, math.ceil(min_side / max(1, min(h, w))))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a ``uint8`` ``(H, W, 3)`` (or ``(H, W)``) image as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(image: np.ndarray, path) -> None:
    """Write a PNG atomically (temporary file in the same folder, then rename)."""
    from ..fileio import write_bytes

    write_bytes(path, png_bytes(image))


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, path, *, dpi: int = 80):
    """Save a matplotlib figure atomically (format from the suffix); return the path."""
    from ..fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return path


def plot_cam(image: np.ndarray, maps: np.ndarray, *, titles: Sequence[str] | None = None,
             alpha: float = 0.6, colormap: str = DEFAULT_COLORMAP):
    """The image, then one overlay per map. ``maps`` is ``(K, H, W)`` in ``[0, 1]``."""
    maps = np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[None]
    fig = _figure(3 * (len(maps) + 1), 3.3)
    axes = fig.subplots(1, len(maps) + 1, squeeze=False)[0]
    axes[0].imshow(np.clip(np.rint(np.asarray(image, np.float32)), 0, 255).astype(np.uint8))
    axes[0].set_title("image")
    for i, (ax, cam) in enumerate(zip(axes[1:], maps)):
        ax.imshow(overlay(image, cam, alpha=alpha, colormap=colormap))
        if titles is not None and i < len(titles):
            ax.set_title(titles[i], fontsize=9)
    for ax in axes:
        ax.axis("off")
    return fig


def plot_filters(results, *, max_filters: int = 8, labels: Sequence[str] | None = None):
    """One row per layer of filter images (a list of :class:`~nsfwkit.viz.filters.FilterResult`).

    Args:
        results: the results, one row each.
        max_filters: at most this many images per row.
        labels: a label per row, written beside it (default: the layer path).
    """
    results = list(results)
    if labels is None:
        labels = [r.layer for r in results]
    labels = [str(label) for label in labels]
    if len(labels) != len(results):
        raise ValueError(f"labels has {len(labels)} entries for {len(results)} results")
    cols = max(1, min(max_filters, max(len(r.filters) for r in results)))
    fig = _figure(1.6 * cols, 1.8 * len(results))
    axes = fig.subplots(len(results), cols, squeeze=False)
    for row, result, label in zip(axes, results, labels):
        for j, ax in enumerate(row):
            ax.axis("off")
            if j < len(result.filters):
                ax.imshow(result.images[j])
                ax.set_title(f"{result.filters[j]}: {result.activation_reached[j]:.3g}", fontsize=7)
        row[0].text(-0.08, 0.5, label, transform=row[0].transAxes, rotation=90,
                    ha="right", va="center", fontsize=8)
    return fig


def plot_activations(result, *, layer: str | None = None, channels: int = 16,
                     colormap: str = "viridis"):
    """The first ``channels`` maps of one layer of an :class:`~nsfwkit.viz.activations.ActivationResult`."""
    name = layer or next(iter(result.layers))
    acts = result.layers[name][0]
    count = min(channels, acts.shape[-1])
    cols = min(8, count)
    rows = math.ceil(count / cols)
    fig = _figure(1.5 * cols, 1.6 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < count:
            ax.imshow(acts[..., i], cmap=colormap)
            ax.set_title(str(i), fontsize=7)
    fig.suptitle(f"{name} {tuple(acts.shape)}", fontsize=9)
    return fig


def plot_most_active(image: np.ndarray, result, *, layer: str | None = None, count: int = 8,
                     colormap: str = "viridis"):
    """The image beside the ``count`` channels of ``layer`` most active for it.

    Args:
        image: ``(H, W, 3)`` raw 0-255, the image the activations were computed on.
        result: an :class:`~nsfwkit.viz.activations.ActivationResult` (its first image is shown).
        layer: a layer of ``result`` (default: its last, the deepest).
        count: how many channels, highest mean activation first.
    """
    from .activations import activation_grid, most_active_channels

    name = layer or list(result.layers)[-1]
    maps = np.asarray(result.layers[name])[0]
    top = most_active_channels(maps, count=count)
    fig = _figure(8, 3)
    axes = fig.subplots(1, 2, width_ratios=[1, 3])
    axes[0].imshow(np.clip(np.rint(np.asarray(image, np.float32)), 0, 255).astype(np.uint8))
    axes[1].imshow(activation_grid(maps, channels=top, colormap=colormap))
    axes[1].set_title(f"{name}: the {len(top)} most active channels ({', '.join(map(str, top.tolist()))})",
                      fontsize=9)
    for ax in axes:
        ax.axis("off")
    return fig
