"""Figures for the visualisations: CAM overlays, filter rows, activation maps.

``plot_*`` functions return ``matplotlib.figure.Figure`` objects (created without pyplot's global
state, Agg-safe). The ``uint8`` RGB array helpers they draw with (colormaps, overlays, grids,
PNG bytes) live in :mod:`nsfwkit.viz.pixels` and are re-exported here.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .activations import activation_grid, most_active_channels
from .pixels import DEFAULT_COLORMAP, colorize, grid, normalize_channel, overlay, png_bytes, to_uint8, upscale

__all__ = [
    "DEFAULT_COLORMAP",
    "colorize",
    "overlay",
    "to_uint8",
    "normalize_channel",
    "grid",
    "upscale",
    "png_bytes",
    "save_figure",
    "plot_cam",
    "plot_filters",
    "plot_activations",
    "plot_most_active",
]


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
