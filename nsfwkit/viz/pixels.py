"""Pixel arrays for the visualisations: colormaps, overlays, grids, PNG bytes.

Every helper returns a ``uint8`` RGB array (what gets written as PNG) or its PNG bytes; the
figures built from them are in :mod:`nsfwkit.viz.plot`.
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
    "upscale",
    "png_bytes",
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
