"""Maximally-activating inputs of conv filters ("what does this channel look for?").

For one layer, all requested filters are optimised **together in one batch** (image ``i``
maximises channel ``filters[i]``) by a compiled ``tf.function`` step; batch norm and dropout run
in inference mode (``training=False``), so images do not interact through batch statistics.

The objective of image ``i`` is the mean of channel ``filters[i]`` of the layer's output with a
border of ``border`` pixels left out (edge effects of padding otherwise dominate). For layers
that only apply an activation (``ReLU``/``ReLU6``/``Activation``, as in MobileNetV2 and
InceptionV3) the objective is taken just before the activation: the same channel, but units that
start dead or saturate at 6 still get a gradient; the reported *activation* is always the
layer's real output. Two recipes:

``classic``
    The original tfjs-examples ``visualize-convnet`` loop (anchors §3.1), made batched and run in
    inference mode: start from grey noise ``U(0, 1) * 20 + 128`` in raw 0-255 pixels; each step
    adds the gradient normalised to unit RMS per image (``step_size`` pixels) and clips to
    ``[0, 255]``; 80 steps. Shown with the DLwP deprocessing (standardise, x0.15, +0.5), which
    avoids the original's saturation.

``quality``
    Lucid / Distill "Feature Visualization" (anchors §3.5): the image is parameterised as a
    colour-decorrelated, 1/f-scaled Fourier spectrum through a sigmoid (``param.image(fft=True,
    decorrelate=True)``; :func:`unit_image`); every step applies a random affine transform
    (:func:`random_affine`, composed from :mod:`nsfwkit.viz.transforms`: scale in
    {0.95 ... 1.05}, rotation -5...5 degrees, translation up to 16 px and a second jitter up to
    8 px, grey fill), and Adam (lr 0.05) ascends the objective; 256 steps by default (Distill
    used 2560).

Both are deterministic for a given ``seed`` (NumPy start values, stateless TF random ops).
Each result reports, per filter, the objective on the start image and on the final image.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from ..kerasutil import cached
from .layers import compiled, default_filter_layers, feature_model, input_size, layer_path
from .transforms import affine_warp, compose, jitter, random_rotate, random_scale, warp

__all__ = [
    "RECIPES",
    "DEFAULT_STEPS",
    "FilterResult",
    "affine_warp",
    "fourier_image",
    "decorrelate_colors",
    "unit_image",
    "random_affine",
    "maximize_filters",
    "visualize_filters",
]

RECIPES = ("classic", "quality")
#: Default number of steps per recipe.
DEFAULT_STEPS = {"classic": 80, "quality": 256}
#: Lucid's square root of the ImageNet colour correlation matrix (``color_correlation_svd_sqrt``).
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
_COLOR = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))
_SCALES = (1.0, 0.975, 1.025, 0.95, 1.05)


@dataclasses.dataclass(frozen=True)
class FilterResult:
    """The optimised images of one layer's filters.

    Attributes:
        layer: layer path.
        filters: channel indices, one per image.
        channels: number of channels the layer has.
        images: ``uint8`` ``(F, S, S, 3)`` display images.
        inputs: ``float32`` ``(F, S, S, 3)`` the optimised raw 0-255 model inputs.
        activation_start: ``float32`` ``(F,)`` the channel's mean activation (layer output,
            border excluded) on the start image.
        activation_reached: ``float32`` ``(F,)`` the same on the final image.
        recipe: ``classic`` or ``quality``.
        steps: optimisation steps.
        seed: random seed.
        seconds: wall time of the optimisation.
        parameters: every setting that shaped the result.
        objective_start: ``float32`` ``(F,)`` the optimised objective on the start image: equal
            to ``activation_start`` except for activation layers (``ReLU``...), where the
            objective is the channel mean of the layer's *input*, so units that start dead (0)
            or saturated (ReLU6 at 6) still get a gradient.
        objective_reached: ``float32`` ``(F,)`` the same on the final image.
    """

    layer: str
    filters: tuple[int, ...]
    channels: int
    images: np.ndarray
    inputs: np.ndarray
    activation_start: np.ndarray
    activation_reached: np.ndarray
    recipe: str
    steps: int
    seed: int
    seconds: float
    parameters: dict
    objective_start: np.ndarray
    objective_reached: np.ndarray

    @property
    def gain(self) -> np.ndarray:
        """``activation_reached / activation_start`` (inf where the start is <= 0)."""
        start = np.asarray(self.activation_start, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(start > 0, self.activation_reached / np.where(start > 0, start, 1), np.inf)


def _auto_border(h: int) -> int:
    return 2 if h >= 16 else (1 if h >= 5 else 0)


def _objective(acts, onehot, border: int):
    import tensorflow as tf

    acts = tf.cast(acts, tf.float32)
    if border:
        acts = acts[:, border:-border, border:-border, :]
    per_channel = tf.reduce_mean(acts, axis=[1, 2])  # (F, C)
    return tf.reduce_sum(per_channel * onehot, axis=-1)  # (F,)


def _fourier_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power
    return (scale * np.sqrt(w * h)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The quality recipe's image parameterisation and per-step transform (lucid param.image / transform)
# --------------------------------------------------------------------------------------------
def fourier_image(params, size: tuple[int, int]):
    """Images ``(N, h, w, 3)`` from 1/f-scaled Fourier coefficients (lucid ``param.spatial.fft_image``).

    Args:
        params: ``float32`` ``(N, 2, 3, h, w // 2 + 1)``: real and imaginary parts of each colour
            channel's ``rfft2d`` spectrum, before the ``1/f`` scaling (:func:`_fourier_scale`).
        size: ``(h, w)``.

    Returns:
        ``float32`` ``(N, h, w, 3)``, divided by 4 as in lucid.
    """
    import tensorflow as tf

    h, w = size
    spectrum = tf.complex(params[:, 0], params[:, 1]) * tf.cast(_fourier_scale(h, w), tf.complex64)
    img = tf.signal.irfft2d(spectrum, fft_length=[h, w])  # (N, 3, h, w)
    return tf.transpose(img, [0, 2, 3, 1]) / 4.0


def decorrelate_colors(images):
    """Map decorrelated colour channels to RGB: ``images @ _COLOR.T`` on the last axis (lucid
    ``param.color``: the square root of ImageNet's colour correlation, normalised)."""
    import tensorflow as tf

    return tf.tensordot(images, tf.constant(_COLOR.T), axes=[[3], [0]])


def unit_image(params, size: tuple[int, int]):
    """The quality recipe's image in ``[0, 1]``: ``sigmoid(decorrelate_colors(fourier_image(params)))``."""
    import tensorflow as tf

    return tf.sigmoid(decorrelate_colors(fourier_image(params, size)))


def random_affine(n, seed, size: tuple[int, int]):
    """The quality recipe's random transform of one step, ``(N, 3, 3)`` (see :mod:`.transforms`).

    Scale by one of {0.95 ... 1.05} and rotate by -5...5 whole degrees about the image centre,
    then shift by up to 16 and again by up to 8 whole pixels; ``seed`` (a ``[2]`` int tensor)
    makes it reproducible.
    """
    h, w = size
    centre = ((h - 1) / 2.0, (w - 1) / 2.0)
    return compose(
        random_scale(n, seed + 1, scales=_SCALES, centre=centre),
        random_rotate(n, seed + 2, degrees=5, centre=centre),
        jitter(n, seed, pixels=16),
        jitter(n, seed + 3, pixels=8),
    )


def _functions(model, layer: str, h: int, w: int, border: int, jit_compile: bool):
    """Compiled (objective, classic step, quality step, param->image) for one layer."""

    def build():
        import tensorflow as tf

        sub = feature_model(model, [layer], head=None, pre_activation=True)
        post = feature_model(model, [layer], head=None)

        def features(x):
            return tf.nest.flatten(sub(x, training=False))[0]

        @compiled(reduce_retracing=True, autograph=False)
        def objective(x, onehot):
            activation = _objective(tf.nest.flatten(post(x, training=False))[0], onehot, border)
            return _objective(features(x), onehot, border), activation

        @compiled(jit_compile=jit_compile, reduce_retracing=True, autograph=False)
        def classic_step(x, onehot, step_size):
            with tf.GradientTape() as tape:
                tape.watch(x)
                obj = _objective(features(x), onehot, border)
                total = tf.reduce_sum(obj)
            g = tape.gradient(total, x)
            g = g / (tf.sqrt(tf.reduce_mean(tf.square(g), axis=[1, 2, 3], keepdims=True)) + 1e-5)
            return tf.clip_by_value(x + step_size * g, 0.0, 255.0), obj

        @compiled(jit_compile=jit_compile, reduce_retracing=True, autograph=False)
        def quality_step(p, m, v, t, onehot, step_seed, lr):
            with tf.GradientTape() as tape:
                tape.watch(p)
                img = unit_image(p, (h, w))
                img = warp(img, random_affine(tf.shape(img)[0], step_seed, (h, w)), fill_value=0.5) * 255.0
                obj = _objective(features(img), onehot, border)
                total = tf.reduce_sum(obj)
            g = -tape.gradient(total, p)  # Adam minimises -objective
            t = t + 1.0
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * tf.square(g)
            m_hat = m / (1.0 - tf.pow(0.9, t))
            v_hat = v / (1.0 - tf.pow(0.999, t))
            return p - lr * m_hat / (tf.sqrt(v_hat) + 1e-8), m, v, t, obj

        @compiled(reduce_retracing=True, autograph=False)
        def render(p):
            return unit_image(p, (h, w)) * 255.0

        return objective, classic_step, quality_step, render

    return cached(model, ("filters", layer, h, w, border, jit_compile), build)


def _deprocess(x: np.ndarray, *, contrast: float = 0.15) -> np.ndarray:
    """DLwP deprocessing per image: standardise, scale by ``contrast``, centre on 0.5, to uint8."""
    out = np.empty(x.shape, np.uint8)
    for i, img in enumerate(x):
        z = (img - img.mean()) / (img.std() + 1e-5) * contrast + 0.5
        out[i] = np.clip(np.rint(z * 255.0), 0, 255).astype(np.uint8)
    return out


def _progress(enabled: bool | None, total: int, desc: str):
    """A text progress bar (:func:`nsfwkit.progress.progress_bar`: survives a notebook reload); None = on."""
    from ..progress import progress_bar

    return progress_bar(total=total, desc=desc, disable=enabled is False, leave=False)


def maximize_filters(
    model,
    layer,
    *,
    filters: int | Sequence[int] = 8,
    recipe: str = "quality",
    steps: int | None = None,
    seed: int = 0,
    step_size: float = 1.0,
    learning_rate: float = 0.05,
    border: int | None = None,
    jit_compile: bool = False,
    progress: bool | None = None,
) -> FilterResult:
    """Optimise inputs that maximise some filters of one layer, all in one batch.

    Args:
        model: a Keras functional model taking raw 0-255 images of a fixed size.
        layer: layer name or path (a 4-D feature map).
        filters: how many leading channels (capped by the layer's channel count), or explicit
            channel indices.
        recipe: ``classic`` or ``quality`` (see the module docstring).
        steps: optimisation steps (default :data:`DEFAULT_STEPS` of the recipe).
        seed: makes the start image and the random transforms reproducible.
        step_size: ``classic``: pixels per step of the RMS-normalised gradient.
        learning_rate: ``quality``: Adam's learning rate.
        border: feature-map pixels left out of the objective at each edge (default 2 for maps of
            16+ pixels, 1 for 5+, else 0).
        jit_compile: compile the optimisation step with XLA (GPU; works on CPU too). Both
            recipes compile whole: the quality recipe's random affine transform is a
            gather-based warp (:func:`affine_warp`) that XLA supports.
        progress: show a text progress bar (stdout in a notebook, stderr on a terminal).
            None or True = on; False = off.

    Returns:
        A :class:`FilterResult`.

    Raises:
        LayerNotFoundError: no such layer.
        ValueError: bad recipe, filters, or a layer that is not a 4-D feature map.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    steps = DEFAULT_STEPS[recipe] if steps is None else int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    path = layer_path(model, layer)
    size = input_size(model)
    if size is None:
        raise ValueError(f"model {model.name!r} has no fixed input size; filters need one")
    h, w = size
    out_shape = tuple(feature_model(model, [path], head=None).outputs[0].shape)
    if len(out_shape) != 4:
        raise ValueError(f"layer {path!r} outputs shape {out_shape}; filters need a 4-D feature map")
    channels = int(out_shape[-1])
    if isinstance(filters, (int, np.integer)):
        if filters < 1:
            raise ValueError(f"filters must be >= 1, got {filters}")
        indices = list(range(min(int(filters), channels)))
    else:
        indices = [int(f) for f in filters]
        bad = [f for f in indices if not 0 <= f < channels]
        if bad or not indices:
            raise ValueError(f"filter indices {bad or indices} out of range for {path!r} ({channels} channels)")
    border = _auto_border(min(out_shape[1] or 0, out_shape[2] or 0)) if border is None else int(border)

    import tensorflow as tf

    objective, classic_step, quality_step, render = _functions(model, path, h, w, border, jit_compile)
    onehot = tf.constant(np.eye(channels, dtype=np.float32)[indices])
    n = len(indices)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    bar = _progress(progress, steps, f"{path} ({recipe})")
    try:
        if recipe == "classic":
            x = tf.constant((rng.uniform(0, 1, (n, h, w, 3)) * 20 + 128).astype(np.float32))
            start = objective(x, onehot)
            size_t = tf.constant(float(step_size))
            for _ in range(steps):
                x, _obj = classic_step(x, onehot, size_t)
                bar.update(1)
            final = x
            images = _deprocess(final.numpy())
        else:
            p = tf.constant((rng.normal(0, 0.01, (n, 2, 3, h, w // 2 + 1))).astype(np.float32))
            m, v, t = tf.zeros_like(p), tf.zeros_like(p), tf.constant(0.0)
            start = objective(render(p), onehot)
            lr = tf.constant(float(learning_rate))
            for i in range(steps):
                step_seed = tf.constant([seed, i], tf.int32)
                p, m, v, t, _obj = quality_step(p, m, v, t, onehot, step_seed, lr)
                bar.update(1)
            final = render(p)
            images = np.clip(np.rint(final.numpy()), 0, 255).astype(np.uint8)
        reached = objective(final, onehot)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    parameters = {
        "recipe": recipe, "steps": steps, "seed": seed, "border": border, "filters": indices,
        **({"step_size": step_size} if recipe == "classic" else {"learning_rate": learning_rate}),
    }
    return FilterResult(
        layer=path, filters=tuple(indices), channels=channels, images=images,
        inputs=np.asarray(final.numpy(), np.float32),
        activation_start=start[1].numpy(), activation_reached=reached[1].numpy(),
        objective_start=start[0].numpy(), objective_reached=reached[0].numpy(),
        recipe=recipe, steps=steps, seed=seed, seconds=seconds, parameters=parameters,
    )


def visualize_filters(
    model,
    layers: Sequence[str] | str | None = None,
    *,
    filters: int | Sequence[int] = 8,
    recipe: str = "quality",
    steps: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
    **kwargs,
) -> list[FilterResult]:
    """:func:`maximize_filters` for several layers (default: a spread from early to late).

    Returns:
        One :class:`FilterResult` per layer, in order.
    """
    if isinstance(layers, str):
        layers = [layers]
    paths = default_filter_layers(model) if layers is None else [layer_path(model, l) for l in layers]
    return [
        maximize_filters(model, path, filters=filters, recipe=recipe, steps=steps, seed=seed,
                         progress=progress, **kwargs)
        for path in paths
    ]
