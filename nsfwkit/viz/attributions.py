"""Pixel-level attributions beside the CAMs: gradients, SmoothGrad, Integrated Gradients, LayerCAM.

Every method takes ``(model, images, *, class_index=None, layer=None)`` and returns ``float32``
``(N, H, W)`` maps in ``[0, 1]`` at the resolution of ``images``, like the CAM functions of
:mod:`nsfwkit.viz.cam` (each map divided by its own maximum; an all-zero map stays zero), and
handles the class scores the same way: gradients are of the **pre-softmax** score of the
explained class (the softmax built into the last ``Dense`` is bypassed in a sub-model sharing
the caller's variables; the caller's model is never modified); ``class_index`` is None (each
image's top-1 class), an int, or one int per image.

* ``gradients`` (Simonyan et al. 2014): ``g = dy_c/dx`` at the model's input pixels.
* ``smoothgrad`` (Smilkov et al. 2017): the mean of ``g`` over ``samples`` copies of the image
  with Gaussian noise of standard deviation ``noise * (max(x) - min(x))`` (a fraction of the
  image's value range; the paper recommends 10-20 %) added; the noise is drawn from
  ``numpy.random.default_rng([seed, i])`` for image ``i``, so a map does not depend on the batch
  it came in. Raw gradients are averaged, then aggregated (zero noise gives the gradient).
* ``integrated_gradients`` (Sundararajan et al. 2017):
  ``(x - x') * integral_0^1 g(x' + a (x - x')) da`` with the baseline ``x'`` one of ``"black"``
  (all zeros, the default), ``"grey"`` (127.5), ``"blur"`` (the image blurred by a Gaussian of
  ``blur_sigma`` times the input side), a number or an array. The integral uses ``steps``
  gradient evaluations (default 64): Gauss-Legendre nodes on ``[0, 1]`` (default, as captum) or
  the trapezoid rule on ``steps`` evenly spaced points including both ends. The completeness
  error ``sum(attributions) - (y_c(x) - y_c(x'))`` is returned per image
  (:attr:`AttributionResult.completeness_error`); it is 0 up to rounding for a model linear in
  its input and shrinks with ``steps`` otherwise, though not monotonically for a ReLU network
  (the kinks along the path). :func:`relative_completeness_error` divides it by
  ``|y_c(x) - y_c(x')|``; above :data:`COMPLETENESS_TOLERANCE` (5 %) ``visualize`` and notebook 06
  warn (:func:`completeness_warning`): raise ``steps`` or use the blur baseline. Measured on the
  default MobileNetV2 (top class, Gauss-Legendre) by a reviewer, black baseline: 64 steps
  astronaut 9.3 %, coffee 13.4 %, camera 42 %; 128 steps coffee 4.3 %, camera 14.8 %; 256 steps
  camera 8.5 %; blur baseline, 64 steps: camera 1 %. Re-measured on another machine with the kit's
  loader (``images.load_image`` of the sample JPEGs, 224 px), black: 64 steps astronaut 17 %,
  coffee 28 %, chelsea 7.9 %, camera 781 % (its score difference is only -0.36: the black image
  scores higher than the photo); 256 steps 7.2 %, 6.0 %, 8.0 %, 31 %; blur: 64 steps 9.9 %, 6.0 %,
  4.0 %, 55 %; 256 steps 0.4 %, 1.1 %, 0.7 %, 3.3 %. So the error depends on the image and the loader, and no
  step count makes the black baseline safe. The defaults stay ``baseline="black"`` and
  ``steps=64``: the black baseline attributes colour and large uniform regions (skin tone among
  them), which the blur baseline by construction cannot (it only credits what blurring removes:
  edges and texture), and 4x the steps costs 4x the time without a guarantee; instead every
  result carries its error, and the warning says when to re-run with more steps or
  ``baseline="blur"`` (256 blur steps were within 5 % on every image measured). Check it before
  trusting a map.
* ``layer_cam`` (Jiang et al. 2021): ``relu(sum_k relu(dy_c/dA_k) * A_k)`` at ``layer`` (default
  the last conv-like layer): the gradient is kept per position, so maps at early, high-resolution
  layers stay sharp where Grad-CAM's spatially averaged weights wash out.

The three pixel methods attribute to the model's input pixels (after the input is resized to
the model's size; the map is then resized bilinearly to the images' size), so their ``layer``
must be None. Their ``(N, S, S, C)`` per-channel attributions are reduced to one value per pixel
by ``aggregate``: ``"abs_max"`` (default, the largest absolute value over the colour channels,
as Simonyan et al. and tf-keras-vis) or ``"l2"`` (the Euclidean norm over the channels). The
signed per-channel values stay in :attr:`AttributionResult.attributions`.

The gradient step is one ``tf.function`` per model (cached with the model), with an input
signature of the model's input shape and a free batch dimension: calling again, with any batch
size, does not retrace. Work is batched ``batch_size`` inputs at a time (noisy copies and path
points of several images share batches only within one image).

:data:`EXPLAINERS` maps every method name, CAMs included, to its function, and :func:`explain`
runs any of them by name and returns the full result (:class:`~nsfwkit.viz.cam.CamResult` or
:class:`AttributionResult`; both have ``maps``, ``raw``, ``class_index``, ``probabilities``,
``layer`` and ``method``).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import numpy as np

from . import cam
from .layers import (
    as_model_input,
    cached,
    feature_model,
    forward_fn,
    last_conv_layer,
    layer_path,
    scores_to_probabilities,
)

__all__ = [
    "METHODS",
    "PIXEL_METHODS",
    "LAYER_METHODS",
    "ALL_METHODS",
    "AGGREGATES",
    "BASELINES",
    "INTEGRATIONS",
    "BLUR_SIGMA",
    "COMPLETENESS_TOLERANCE",
    "GREY",
    "INPUT",
    "EXPLAINERS",
    "AttributionResult",
    "aggregate_channels",
    "baseline_images",
    "blur",
    "completeness_warning",
    "compute_attribution",
    "explain",
    "gradients",
    "integrated_gradients",
    "integration_path",
    "layer_cam",
    "relative_completeness_error",
    "smoothgrad",
]

#: The attribution methods by name (beside :data:`nsfwkit.viz.cam.METHODS`).
METHODS = ("gradients", "smoothgrad", "integrated_gradients", "layer_cam")
#: Methods attributing to the input pixels (their ``layer`` must be None).
PIXEL_METHODS = ("gradients", "smoothgrad", "integrated_gradients")
#: Methods computed at a layer (``layer`` = None means the last conv-like layer).
LAYER_METHODS = cam.METHODS + ("layer_cam",)
#: Every explanation method the kit has: the CAMs, then the attributions.
ALL_METHODS = cam.METHODS + METHODS
#: Channel reductions of the pixel methods.
AGGREGATES = ("abs_max", "l2")
#: Named baselines (a number or an array is accepted too).
BASELINES = ("black", "grey", "blur")
#: Quadrature rules for Integrated Gradients.
INTEGRATIONS = ("gausslegendre", "trapezoid")
#: The grey baseline's value (the middle of 0-255).
GREY = 127.5
#: Standard deviation of the ``"blur"`` baseline, as a fraction of the input's side (11 px at 224).
BLUR_SIGMA = 0.05
#: ``AttributionResult.layer`` of the pixel methods.
INPUT = "input"
#: Integrated Gradients: a relative completeness error above this (5 %) earns a warning.
COMPLETENESS_TOLERANCE = 0.05


@dataclasses.dataclass(frozen=True)
class AttributionResult:
    """A batch of attribution maps and what they explain.

    Attributes:
        maps: ``float32`` ``(N, H, W)`` in ``[0, 1]`` at the images' resolution.
        raw: ``float32`` ``(N, H, W)`` >= 0, the same maps before normalisation (in units of
            the class logit per pixel for gradients, of the logit for Integrated Gradients).
        class_index: ``int`` ``(N,)``, the class each map explains.
        probabilities: ``float32`` ``(N, classes)`` class probabilities of the images.
        layer: :data:`INPUT` for pixel methods, else the layer's path.
        method: one of :data:`METHODS`.
        attributions: pixel methods: the signed per-channel values ``float32`` ``(N, S, S, C)``
            at the model's input size; None for ``layer_cam``.
        completeness_error: ``integrated_gradients`` only: ``float64`` ``(N,)``,
            ``sum(attributions) - score_difference``.
        score_difference: ``integrated_gradients`` only: ``float64`` ``(N,)``,
            ``y_c(x) - y_c(baseline)`` of the class logit.
        parameters: everything that shaped the maps (steps, baseline, noise, aggregate...).
    """

    maps: np.ndarray
    raw: np.ndarray
    class_index: np.ndarray
    probabilities: np.ndarray
    layer: str
    method: str
    attributions: np.ndarray | None = None
    completeness_error: np.ndarray | None = None
    score_difference: np.ndarray | None = None
    parameters: dict = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Compiled steps
# --------------------------------------------------------------------------------------------
def _input_gradient_fn(model, *, jit_compile: bool = False):
    """A compiled ``(x, cls) -> (dy_cls/dx, logits, cls)``; ``cls < 0`` means top-1.

    One trace per model: the input signature fixes the image shape and leaves the batch free.
    """

    def build():
        import tensorflow as tf

        sub = feature_model(model, [], head="logits")
        shape = (None,) + tuple(model.inputs[0].shape[1:])
        signature = [tf.TensorSpec(shape, tf.float32), tf.TensorSpec((None,), tf.int32)]

        @tf.function(input_signature=signature, jit_compile=jit_compile, autograph=False)
        def fn(x, cls):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = tf.cast(tf.nest.flatten(sub(x, training=False))[-1], tf.float32)
                cls = tf.where(cls < 0, tf.argmax(logits, axis=-1, output_type=tf.int32), cls)
                score = tf.gather(logits, cls, axis=1, batch_dims=1)
            return tf.cast(tape.gradient(score, x), tf.float32), logits, cls

        return fn

    return cached(model, ("attributions.input_gradient", jit_compile), build)


def _input_gradients(fn, x: np.ndarray, cls: np.ndarray, batch_size: int):
    """``fn`` over ``x`` in batches: gradients ``(M, S, S, C)``, logits ``(M, K)``, classes ``(M,)``."""
    grads, logits, used = [], [], []
    for start in range(0, x.shape[0], batch_size):
        g, z, c = fn(x[start : start + batch_size], cls[start : start + batch_size])
        grads.append(g.numpy())
        logits.append(z.numpy())
        used.append(c.numpy())
    return np.concatenate(grads), np.concatenate(logits), np.concatenate(used)


def _logits(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Pre-softmax scores ``(N, K)`` of a model-size batch."""
    fn = forward_fn(model, [], head="logits")
    return np.concatenate([fn(x[s : s + batch_size])[-1].numpy() for s in range(0, x.shape[0], batch_size)])


def _chosen(logits: np.ndarray, cls: np.ndarray) -> np.ndarray:
    return np.where(cls < 0, np.argmax(logits, axis=-1), cls).astype(np.int32)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
def aggregate_channels(attributions: np.ndarray, how: str = "abs_max") -> np.ndarray:
    """``(..., C)`` signed attributions -> ``float32`` ``(...)`` >= 0: ``abs_max`` or ``l2`` over C."""
    a = np.asarray(attributions)
    if how == "abs_max":
        return np.abs(a).max(axis=-1).astype(np.float32)
    if how == "l2":
        return np.sqrt(np.square(a.astype(np.float64)).sum(axis=-1)).astype(np.float32)
    raise ValueError(f"unknown aggregate {how!r}; choose from {', '.join(AGGREGATES)}")


def blur(images: np.ndarray, *, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """A Gaussian blur of ``(N, H, W, C)`` images, ``sigma`` a fraction of the shorter side.

    Separable, reflecting at the borders; ``sigma <= 0`` returns a copy.
    """
    import tensorflow as tf

    x = np.asarray(images, np.float32)
    side = min(x.shape[1], x.shape[2])
    s = float(sigma) * side
    if s <= 0:
        return x.copy()
    radius = int(min(np.ceil(3 * s), side - 1))
    if radius < 1:
        return x.copy()
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / s) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    channels = x.shape[-1]
    out = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = np.tile(taps.reshape(-1, 1, 1, 1), (1, 1, channels, 1))
    cols = np.tile(taps.reshape(1, -1, 1, 1), (1, 1, channels, 1))
    out = tf.nn.depthwise_conv2d(out, rows, strides=[1, 1, 1, 1], padding="VALID")
    out = tf.nn.depthwise_conv2d(out, cols, strides=[1, 1, 1, 1], padding="VALID")
    return out.numpy()


def baseline_images(x: np.ndarray, baseline: Any = "black", *, blur_sigma: float = BLUR_SIGMA) -> np.ndarray:
    """The baseline for a model-size batch ``x`` ``(N, S, S, C)``: same shape, ``float32``.

    Args:
        baseline: ``"black"`` (0), ``"grey"`` (127.5), ``"blur"`` (:func:`blur` of ``x``), a
            number, or an array broadcastable to ``x``.
    """
    x = np.asarray(x, np.float32)
    if isinstance(baseline, str):
        if baseline == "black":
            return np.zeros_like(x)
        if baseline == "grey":
            return np.full_like(x, GREY)
        if baseline == "blur":
            return blur(x, sigma=blur_sigma)
        raise ValueError(f"unknown baseline {baseline!r}; choose from {', '.join(BASELINES)}, a number or an array")
    try:
        return np.broadcast_to(np.asarray(baseline, np.float32), x.shape).copy()
    except ValueError:
        raise ValueError(f"baseline of shape {np.shape(baseline)} does not broadcast to the images {x.shape}") from None


def integration_path(steps: int, integration: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Points ``a`` in ``[0, 1]`` and weights (summing to 1) approximating ``integral_0^1 f(a) da``.

    ``gausslegendre``: ``steps`` Gauss-Legendre nodes (exact for polynomials of degree
    ``2 steps - 1``); ``trapezoid``: ``steps`` evenly spaced points with both ends, end weights
    halved.
    """
    steps = int(steps)
    if integration == "gausslegendre":
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if integration == "trapezoid":
        if steps < 2:
            raise ValueError(f"the trapezoid rule needs steps >= 2, got {steps}")
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2.0
        return np.linspace(0.0, 1.0, steps), weights
    raise ValueError(f"unknown integration {integration!r}; choose from {', '.join(INTEGRATIONS)}")


# --------------------------------------------------------------------------------------------
# The methods
# --------------------------------------------------------------------------------------------
def _vanilla(model, x, cls, *, batch_size: int, jit_compile: bool) -> dict:
    grads, logits, chosen = _input_gradients(_input_gradient_fn(model, jit_compile=jit_compile), x, cls, batch_size)
    return {"attributions": grads, "logits": logits, "chosen": chosen, "parameters": {}}


def _smoothgrad(model, x, cls, *, batch_size: int, jit_compile: bool, samples: int = 25, noise: float = 0.15,
                seed: int = 0) -> dict:
    if int(samples) < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    fn = _input_gradient_fn(model, jit_compile=jit_compile)
    logits = _logits(model, x, batch_size)
    chosen = _chosen(logits, cls)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        sigma = float(noise) * float(x[i].max() - x[i].min())
        rng = np.random.default_rng([int(seed), i])
        batch = x[i][None] + (sigma * rng.standard_normal((int(samples),) + x.shape[1:])).astype(np.float32)
        grads, _, _ = _input_gradients(fn, batch, np.full(int(samples), chosen[i], np.int32), batch_size)
        out[i] = grads.mean(axis=0)
    return {"attributions": out, "logits": logits, "chosen": chosen,
            "parameters": {"samples": int(samples), "noise": float(noise), "seed": int(seed)}}


def _integrated_gradients(model, x, cls, *, batch_size: int, jit_compile: bool, steps: int = 64,
                          baseline: Any = "black", integration: str = "gausslegendre",
                          blur_sigma: float = BLUR_SIGMA) -> dict:
    alphas, weights = integration_path(steps, integration)
    base = baseline_images(x, baseline, blur_sigma=blur_sigma)
    fn = _input_gradient_fn(model, jit_compile=jit_compile)
    logits = _logits(model, x, batch_size)
    chosen = _chosen(logits, cls)
    base_logits = _logits(model, base, batch_size)
    out = np.empty_like(x)
    shape = (-1,) + (1,) * (x.ndim - 1)
    for i in range(x.shape[0]):
        delta = x[i] - base[i]
        path = (base[i][None] + alphas.reshape(shape).astype(np.float32) * delta[None]).astype(np.float32)
        grads, _, _ = _input_gradients(fn, path, np.full(len(alphas), chosen[i], np.int32), batch_size)
        out[i] = (delta * np.tensordot(weights, grads, axes=1)).astype(np.float32)
    rows = np.arange(x.shape[0])
    difference = logits[rows, chosen].astype(np.float64) - base_logits[rows, chosen].astype(np.float64)
    error = out.reshape(out.shape[0], -1).sum(axis=1, dtype=np.float64) - difference
    label = baseline if isinstance(baseline, str) else "custom"
    return {"attributions": out, "logits": logits, "chosen": chosen, "completeness_error": error,
            "score_difference": difference,
            "parameters": {"steps": int(steps), "baseline": label, "integration": integration,
                           "blur_sigma": float(blur_sigma)}}


_PIXEL_IMPLEMENTATIONS = {"gradients": _vanilla, "smoothgrad": _smoothgrad,
                          "integrated_gradients": _integrated_gradients}


def relative_completeness_error(completeness_error, score_difference) -> np.ndarray:
    """``|completeness_error| / |score_difference|`` per image, ``float64``; NaN where the score
    difference is 0 (the baseline scores as the image does: no relative error is defined)."""
    error = np.abs(np.asarray(completeness_error, np.float64))
    difference = np.abs(np.asarray(score_difference, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(difference > 0, error / np.where(difference > 0, difference, 1.0), np.nan)


def completeness_warning(completeness_error: float, score_difference: float, *, what: str = "integrated_gradients",
                         tolerance: float = COMPLETENESS_TOLERANCE) -> str | None:
    """One line when one Integrated Gradients map's completeness error is above ``tolerance`` of
    its score difference (or nonzero when that difference is 0); None when completeness holds."""
    if score_difference == 0:
        if completeness_error == 0:
            return None
        return (f"{what}: completeness error {completeness_error:.3g} while the baseline scores as the image "
                "does: raise steps or use the blur baseline")
    relative = float(relative_completeness_error(completeness_error, score_difference))
    if relative <= tolerance:
        return None
    return (f"{what}: completeness error {relative:.1%} of the score difference (tolerance {tolerance:.0%}): "
            "raise steps or use the blur baseline")


def _layer_cam(model, x, cls, layer: str, *, batch_size: int, jit_compile: bool):
    fn = cam._gradient_fn(model, layer, jit_compile=jit_compile)
    maps, logits, used = [], [], []
    for start in range(0, x.shape[0], batch_size):
        acts, grads, z, chosen = fn(x[start : start + batch_size], cls[start : start + batch_size])
        acts, grads = acts.numpy(), grads.numpy()
        if acts.ndim != 4:
            raise ValueError(f"layer {layer!r} outputs shape {acts.shape}; LayerCAM needs a 4-D feature map")
        maps.append(np.maximum((np.maximum(grads, 0.0) * acts).sum(axis=-1), 0.0))
        logits.append(z.numpy())
        used.append(chosen.numpy())
    return np.concatenate(maps), np.concatenate(logits), np.concatenate(used)


def compute_attribution(
    model,
    images,
    *,
    method: str = "gradients",
    class_index=None,
    layer=None,
    aggregate: str = "abs_max",
    batch_size: int = 32,
    jit_compile: bool = False,
    **options,
) -> AttributionResult:
    """Compute attribution maps with any of :data:`METHODS`.

    Args:
        model: a Keras functional classifier taking raw 0-255 images.
        images: ``(N, H, W, C)`` or ``(H, W, C)`` raw 0-255.
        method: ``gradients``, ``smoothgrad``, ``integrated_gradients`` or ``layer_cam``.
        class_index: None (top-1 per image), an int, or one int per image.
        layer: ``layer_cam`` only: a layer name/path (default the last conv-like layer); must
            be None for the pixel methods.
        aggregate: pixel methods: ``abs_max`` or ``l2`` over the colour channels.
        batch_size: model inputs per gradient step.
        jit_compile: compile the gradient step with XLA (useful on GPU).
        **options: ``smoothgrad``: ``samples`` (25), ``noise`` (0.15), ``seed`` (0);
            ``integrated_gradients``: ``steps`` (64), ``baseline`` (``"black"``),
            ``integration`` (``"gausslegendre"``), ``blur_sigma`` (:data:`BLUR_SIGMA`).

    Returns:
        An :class:`AttributionResult`; ``.maps`` is ``float32`` ``(N, H, W)`` in ``[0, 1]``.

    Raises:
        LayerNotFoundError: ``layer`` is not in the model.
        ValueError: a bad method, option, class index or image array.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; choose from {', '.join(AGGREGATES)}")
    if method in PIXEL_METHODS and layer is not None:
        raise ValueError(f"{method} attributes to the input pixels: layer must be None "
                         "(for a layer, use layer_cam or a CAM method)")
    x, size = as_model_input(model, images)
    cls = cam._class_vector(class_index, x.shape[0], int(model.outputs[0].shape[-1]))
    if method == "layer_cam":
        if options:
            raise ValueError(f"layer_cam takes no options, got {sorted(options)}")
        layer = last_conv_layer(model) if layer is None else layer_path(model, layer)
        raw, logits, chosen = _layer_cam(model, x, cls, layer, batch_size=batch_size, jit_compile=jit_compile)
        out = {"attributions": None, "logits": logits, "chosen": chosen, "parameters": {}}
    else:
        implementation = _PIXEL_IMPLEMENTATIONS[method]
        try:
            out = implementation(model, x, cls, batch_size=batch_size, jit_compile=jit_compile, **options)
        except TypeError as exc:
            if "unexpected keyword" not in str(exc):
                raise
            raise ValueError(f"{method}: {exc}") from None
        raw = aggregate_channels(out["attributions"], aggregate)
        out["parameters"]["aggregate"] = aggregate
    raw = np.maximum(cam._upsample(raw, size), 0.0).astype(np.float32)
    return AttributionResult(
        maps=cam._normalize(raw),
        raw=raw,
        class_index=np.asarray(out["chosen"], np.int64),
        probabilities=scores_to_probabilities(model, out["logits"]),
        layer=INPUT if method in PIXEL_METHODS else layer,
        method=method,
        attributions=out["attributions"],
        completeness_error=out.get("completeness_error"),
        score_difference=out.get("score_difference"),
        parameters=out["parameters"],
    )


def gradients(model, images, *, class_index=None, layer=None, aggregate: str = "abs_max",
              batch_size: int = 32) -> np.ndarray:
    """Vanilla gradient maps ``float32`` ``(N, H, W)`` in ``[0, 1]``; see :func:`compute_attribution`."""
    return compute_attribution(model, images, method="gradients", class_index=class_index, layer=layer,
                               aggregate=aggregate, batch_size=batch_size).maps


def smoothgrad(model, images, *, class_index=None, layer=None, samples: int = 25, noise: float = 0.15,
               seed: int = 0, aggregate: str = "abs_max", batch_size: int = 32) -> np.ndarray:
    """SmoothGrad maps ``float32`` ``(N, H, W)`` in ``[0, 1]``; see :func:`compute_attribution`.

    Costs ``samples`` forward + backward passes per image.
    """
    return compute_attribution(model, images, method="smoothgrad", class_index=class_index, layer=layer,
                               samples=samples, noise=noise, seed=seed, aggregate=aggregate,
                               batch_size=batch_size).maps


def integrated_gradients(model, images, *, class_index=None, layer=None, steps: int = 64, baseline="black",
                         integration: str = "gausslegendre", aggregate: str = "abs_max",
                         batch_size: int = 32) -> np.ndarray:
    """Integrated Gradients maps ``float32`` ``(N, H, W)`` in ``[0, 1]``; see :func:`compute_attribution`.

    Costs ``steps`` forward + backward passes per image (plus two forward passes); use
    :func:`compute_attribution` for the signed attributions and the completeness error.
    """
    return compute_attribution(model, images, method="integrated_gradients", class_index=class_index,
                               layer=layer, steps=steps, baseline=baseline, integration=integration,
                               aggregate=aggregate, batch_size=batch_size).maps


def layer_cam(model, images, *, class_index=None, layer=None, batch_size: int = 32) -> np.ndarray:
    """LayerCAM maps ``float32`` ``(N, H, W)`` in ``[0, 1]``; see :func:`compute_attribution`."""
    return compute_attribution(model, images, method="layer_cam", class_index=class_index, layer=layer,
                               batch_size=batch_size).maps


#: Every method by name -> its ``(model, images, *, class_index=None, layer=None)`` function.
EXPLAINERS = types.MappingProxyType({
    "grad_cam": cam.grad_cam,
    "grad_cam_plus_plus": cam.grad_cam_plus_plus,
    "score_cam": cam.score_cam,
    "gradients": gradients,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "layer_cam": layer_cam,
})


def explain(model, images, *, method: str, class_index=None, layer=None, **options):
    """Run any method of :data:`ALL_METHODS` by name; return its full result.

    A CAM method returns :func:`nsfwkit.viz.cam.compute_cam`'s :class:`~nsfwkit.viz.cam.CamResult`
    (``options``: ``batch_size``, ``max_channels``, ``jit_compile``), an attribution method
    :func:`compute_attribution`'s :class:`AttributionResult`.
    """
    if method in cam.METHODS:
        return cam.compute_cam(model, images, method=method, class_index=class_index, layer=layer, **options)
    if method in METHODS:
        return compute_attribution(model, images, method=method, class_index=class_index, layer=layer, **options)
    raise ValueError(f"unknown explanation method {method!r}; choose from {', '.join(ALL_METHODS)}")
