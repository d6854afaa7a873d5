"""Random image transforms for feature visualisation (lucid's ``optvis/transform.py``, as matrices).

Lucid makes a visualisation robust by transforming the image randomly before every step
(jitter, scale, rotate). Here each transform is a small function returning per-image **affine
matrices** ``(N, 3, 3)`` in pixel coordinates: an input pixel at ``(x, y, 1)`` lands at
``M @ (x, y, 1)`` in the output. :func:`compose` chains them (the first one listed is applied
first) and :func:`warp` resamples the images **once** for the whole chain: a single bilinear
interpolation instead of one per transform, compiled by XLA (``jit_compile=True``), with the
exact adjoint of the warp as its gradient (:func:`affine_warp`).

* exact transforms: :func:`translation`, :func:`scaling`, :func:`rotation` (about a centre);
* random ones, deterministic for a stateless ``seed`` (a ``[2]`` int tensor): :func:`jitter`,
  :func:`random_scale`, :func:`random_rotate`.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = [
    "affine_warp",
    "translation",
    "scaling",
    "rotation",
    "compose",
    "warp",
    "jitter",
    "random_scale",
    "random_rotate",
]


def _affine(a00, a01, a02, a10, a11, a12):
    """``(N, 3, 3)`` matrices from six ``(N,)`` rows ``[[a00, a01, a02], [a10, a11, a12], [0, 0, 1]]``."""
    import tensorflow as tf

    zero = tf.zeros_like(a00)
    rows = [a00, a01, a02, a10, a11, a12, zero, zero, zero + 1.0]
    return tf.reshape(tf.stack(rows, axis=1), [-1, 3, 3])


def translation(offsets):
    """Shift each image by ``offsets`` ``(N, 2)`` pixels, ``[dx, dy]`` (right and down are positive)."""
    import tensorflow as tf

    offsets = tf.cast(offsets, tf.float32)
    dx, dy = offsets[:, 0], offsets[:, 1]
    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    return _affine(one, zero, dx, zero, one, dy)


def scaling(factors, centre: tuple[float, float]):
    """Zoom each image by ``factors`` ``(N,)`` about ``centre`` = ``(cy, cx)`` (> 1 enlarges)."""
    import tensorflow as tf

    s = tf.cast(factors, tf.float32)
    cy, cx = centre
    zero = tf.zeros_like(s)
    return _affine(s, zero, cx * (1.0 - s), zero, s, cy * (1.0 - s))


def rotation(degrees, centre: tuple[float, float]):
    """Rotate each image by ``degrees`` ``(N,)`` about ``centre`` = ``(cy, cx)`` (clockwise on screen,
    as y points down)."""
    import tensorflow as tf

    theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    cy, cx = centre
    return _affine(cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)


def compose(*matrices):
    """One ``(N, 3, 3)`` matrix applying ``matrices`` in order (the first listed first)."""
    import tensorflow as tf

    out = matrices[0]
    for m in matrices[1:]:
        out = tf.linalg.matmul(m, out)
    return out


def warp(images, matrix, *, fill_value: float = 0.5):
    """``images`` ``(N, H, W, C)`` moved by ``matrix`` ``(N, 3, 3)``: one bilinear resampling.

    An output pixel reads the input where the inverse of ``matrix`` maps it; outside the input
    it reads ``fill_value``.
    """
    import tensorflow as tf

    a, b, c = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    d, e, f = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    inverse = tf.stack([ia, ib, -(ia * c + ib * f), id_, ie, -(id_ * c + ie * f)], axis=1)
    return affine_warp(images, inverse, fill_value=fill_value)


def jitter(n, seed, *, pixels: int):
    """Random whole-pixel shifts, ``dx`` and ``dy`` each ``round(U(-1, 1) * pixels)`` (lucid's ``jitter``)."""
    import tensorflow as tf

    u = tf.random.stateless_uniform([n, 2], seed=seed, minval=-1.0, maxval=1.0)
    return translation(tf.round(u * float(pixels)))


def random_scale(n, seed, *, scales: Sequence[float], centre: tuple[float, float]):
    """Zoom each image by one of ``scales``, picked uniformly (lucid's ``random_scale``)."""
    import tensorflow as tf

    pick = tf.random.stateless_uniform([n], seed=seed, maxval=len(scales), dtype=tf.int32)
    return scaling(tf.gather(tf.constant(scales, tf.float32), pick), centre)


def random_rotate(n, seed, *, degrees: int, centre: tuple[float, float]):
    """Rotate each image by a whole number of degrees in ``[-degrees, degrees]``, uniformly
    (lucid's ``random_rotate``)."""
    import tensorflow as tf

    limit = float(degrees) + 0.5
    angle = tf.round(tf.random.stateless_uniform([n], seed=seed, minval=-limit, maxval=limit))
    return rotation(angle, centre)


def affine_warp(images, matrix, *, fill_value: float = 0.5):
    """Bilinear affine warp built from ``gather`` (differentiable, XLA-compilable).

    Output pixel ``(y, x)`` reads the input at ``(a3 x + a4 y + a5, a0 x + a1 y + a2)``; corners
    outside the image read ``fill_value``. This is exactly ``tf.raw_ops.ImageProjectiveTransformV3``
    with ``interpolation="BILINEAR", fill_mode="CONSTANT"`` for affine matrices, but unlike that op
    it has an XLA kernel (``jit_compile=True`` works on CPU and GPU) and its gradient is the exact
    adjoint of the warp.

    Args:
        images: ``float`` tensor ``(N, H, W, C)``.
        matrix: ``float32`` ``(N, 6)`` rows ``[a0, a1, a2, a3, a4, a5]`` mapping output to input
            coordinates.
        fill_value: the value outside the input.

    Returns:
        A tensor shaped like ``images``.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    ys, xs = tf.meshgrid(tf.range(hf), tf.range(wf), indexing="ij")
    xs, ys = tf.reshape(xs, [1, -1]), tf.reshape(ys, [1, -1])
    a = [matrix[:, i : i + 1] for i in range(6)]
    x_in = a[0] * xs + a[1] * ys + a[2]  # (N, H*W)
    y_in = a[3] * xs + a[4] * ys + a[5]
    x0, y0 = tf.floor(x_in), tf.floor(y_in)
    flat = tf.reshape(images, [n, -1, c])
    fill = tf.cast(fill_value, images.dtype)

    def read(yy, xx):
        inside = (yy >= 0.0) & (yy < hf) & (xx >= 0.0) & (xx < wf)
        index = tf.cast(tf.clip_by_value(yy, 0.0, hf - 1.0) * wf + tf.clip_by_value(xx, 0.0, wf - 1.0), tf.int32)
        return tf.where(inside[..., None], tf.gather(flat, index, batch_dims=1), fill)

    wx = tf.cast((x_in - x0)[..., None], images.dtype)
    wy = tf.cast((y_in - y0)[..., None], images.dtype)
    top = (1.0 - wx) * read(y0, x0) + wx * read(y0, x0 + 1.0)
    bottom = (1.0 - wx) * read(y0 + 1.0, x0) + wx * read(y0 + 1.0, x0 + 1.0)
    return tf.reshape((1.0 - wy) * top + wy * bottom, shape)
