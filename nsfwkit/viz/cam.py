"""Class activation maps: Grad-CAM, Grad-CAM++ and Score-CAM for any Keras functional model.

All three take ``(model, images, *, class_index=None, layer=None)`` and return ``float32``
``(N, H, W)`` maps in ``[0, 1]`` at the resolution of ``images`` (each map divided by its own
maximum; an all-zero map stays zero).

* ``layer`` defaults to the last conv-like layer (:func:`nsfwkit.viz.layers.last_conv_layer`;
  pass ``spec.last_conv_layer`` for the pretrained models: ``out_relu`` / ``mixed10``). Layers
  inside a nested backbone are reached by name or ``backbone/layer`` path.
* ``class_index``: None explains each image's top-1 class; an int explains that class for every
  image; a sequence gives one class per image.
* Gradients are of the **pre-softmax score**: the softmax built into the nsfwjs models' last
  ``Dense`` is bypassed in a sub-model sharing the same variables (the caller's model is never
  modified). Batch norm and dropout run in inference mode.

Recipes (``A`` = the layer's activations ``(h, w, K)``, ``y`` = the class logit,
``g = dy/dA``):

* Grad-CAM (Selvaraju et al. 2017): ``w_k = mean_ij g``, ``cam = relu(sum_k w_k A_k)``.
* Grad-CAM++ (Chattopadhay et al. 2018), as in the authors' reference code
  (``adityac94/Grad_CAM_plus_plus``, ``misc/utils.py``) and tf-keras-vis ``GradcamPlusPlus``:
  ``alpha_ij = g^2 / (2 g^2 + sum_ab(A) g^3)`` (the denominator taken as 1 where it is 0);
  ``alpha`` is then **normalised over space per channel**, dividing by its sum over the
  positions where ``g > 0`` (the authors' thresholding; tf-keras-vis sums over all positions);
  ``w_k = sum_ij alpha_ij relu(g_ij)``, ``cam = relu(sum_k w_k A_k)``. The references multiply
  ``g`` by ``exp(score)``: it cancels in ``alpha`` and scales each map by a constant that the
  max-normalisation removes, so it is left out (it overflows for large scores). When ``g`` is
  constant over space this reduces to Grad-CAM with ``relu`` on the weights.
* Score-CAM (Wang et al. 2020): each channel is upsampled to the input size, min-max scaled to
  ``[0, 1]`` and used to mask the input; ``w_k`` is the class probability of that masked input;
  ``cam = relu(sum_k w_k A_k)``. It costs one forward pass per channel; ``max_channels`` keeps
  only the highest-variance channels (Faster Score-CAM).

Probabilities (``CamResult.probabilities`` and Score-CAM's weights) are made from the
pre-activation scores the way the model's head makes them
(:func:`nsfwkit.viz.layers.scores_to_probabilities`): softmax for a softmax head, sigmoid for a
sigmoid head; for a model that outputs raw logits, softmax (sigmoid when it has one unit).

Maps are computed at the layer's resolution and upsampled bilinearly.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..kerasutil import cached
from .layers import (
    as_model_input,
    compiled,
    feature_model,
    forward_fn,
    last_conv_layer,
    layer_path,
    scores_to_probabilities,
)

__all__ = [
    "CamResult",
    "METHODS",
    "compute_cam",
    "cam_coverage",
    "grad_cam",
    "grad_cam_plus_plus",
    "score_cam",
    "cam_per_class",
]

#: The CAM methods by name (the CLI and manifests use these names).
METHODS = ("grad_cam", "grad_cam_plus_plus", "score_cam")


@dataclasses.dataclass(frozen=True)
class CamResult:
    """A batch of class activation maps and what they explain.

    Attributes:
        maps: ``float32`` ``(N, H, W)`` in ``[0, 1]`` at the images' resolution.
        class_index: ``int`` ``(N,)``, the class each map explains.
        probabilities: ``float32`` ``(N, classes)``, class probabilities (the model's softmax
            or sigmoid output; a softmax/sigmoid of the scores for a logits-output model).
        layer: path of the layer the maps were computed on.
        method: one of :data:`METHODS`.
        raw: ``float32`` ``(N, H, W)`` >= 0, the maps before normalisation (``relu`` of the
            weighted activations, upsampled): comparable across classes of one image.
    """

    maps: np.ndarray
    class_index: np.ndarray
    probabilities: np.ndarray
    layer: str
    method: str
    raw: np.ndarray | None = None


def _gradient_fn(model, layer: str, *, jit_compile: bool = False):
    """A compiled ``(x, cls) -> (A, dy/dA, logits, cls)`` for ``layer`` of ``model``."""

    def build():
        import tensorflow as tf

        sub = feature_model(model, [layer], head="logits")

        @compiled(reduce_retracing=True, jit_compile=jit_compile, autograph=False)
        def fn(x, cls):
            with tf.GradientTape() as tape:
                acts, logits = sub(x, training=False)
                logits = tf.cast(logits, tf.float32)
                cls = tf.where(cls < 0, tf.argmax(logits, axis=-1, output_type=tf.int32), cls)
                score = tf.gather(logits, cls, axis=1, batch_dims=1)
            grads = tape.gradient(score, acts)
            return tf.cast(acts, tf.float32), tf.cast(grads, tf.float32), logits, cls

        return fn

    return cached(model, ("cam.grad", layer, jit_compile), build)


def _class_vector(class_index, n: int, classes: int | None = None) -> np.ndarray:
    if class_index is None:
        return np.full(n, -1, np.int32)
    arr = np.asarray(class_index)
    if arr.ndim == 0:
        arr = np.full(n, int(arr), np.int32)
    arr = arr.astype(np.int32).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"class_index has {arr.shape[0]} entries for {n} images")
    if classes is not None and ((arr < 0) | (arr >= classes)).any():
        raise ValueError(f"class_index {arr.tolist()} out of range for {classes} classes")
    return arr


def _upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(N, h, w)`` -> ``(N, H, W)`` bilinear (half-pixel centres)."""
    if tuple(maps.shape[1:3]) == tuple(size):
        return maps.astype(np.float32)
    import tensorflow as tf

    out = tf.image.resize(maps[..., None].astype(np.float32), size, method="bilinear")
    return out.numpy()[..., 0]


def _normalize(maps: np.ndarray) -> np.ndarray:
    """Divide each map by its maximum (maps are already >= 0); clip to [0, 1]."""
    maps = np.maximum(maps, 0.0)
    peak = maps.reshape(maps.shape[0], -1).max(axis=1)
    peak = np.where(peak > 0, peak, 1.0)[:, None, None]
    return np.clip(maps / peak, 0.0, 1.0).astype(np.float32)


def _grad_weights(acts: np.ndarray, grads: np.ndarray, method: str) -> np.ndarray:
    """Channel weights ``(N, K)`` from activations and gradients ``(N, h, w, K)``."""
    if method == "grad_cam":
        return grads.mean(axis=(1, 2))
    # Grad-CAM++ as in the authors' code (exp(score) left out: see the module docstring).
    g2 = grads**2
    g3 = g2 * grads
    total = acts.sum(axis=(1, 2), keepdims=True)
    denom = 2.0 * g2 + total * g3
    alpha = g2 / np.where(denom != 0.0, denom, 1.0)
    norm = np.where(grads > 0.0, alpha, 0.0).sum(axis=(1, 2), keepdims=True)
    alpha = alpha / np.where(norm != 0.0, norm, 1.0)
    return (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2))


def compute_cam(
    model,
    images,
    *,
    method: str = "grad_cam",
    class_index=None,
    layer=None,
    batch_size: int = 16,
    max_channels: int | None = None,
    jit_compile: bool = False,
) -> CamResult:
    """Compute class activation maps with any of :data:`METHODS`.

    Args:
        model: a Keras functional classifier taking raw 0-255 images.
        images: ``(N, H, W, C)`` or ``(H, W, C)`` raw 0-255 (resized to the model's input size
            for the forward pass; maps come back at ``(H, W)``).
        method: ``grad_cam``, ``grad_cam_plus_plus`` or ``score_cam``.
        class_index: None (top-1 per image), an int, or one int per image.
        layer: layer name/path; default the last conv-like layer.
        batch_size: images (Grad-CAM) or masked inputs (Score-CAM) per forward pass.
        max_channels: Score-CAM only: keep the N highest-variance channels (None = all).
        jit_compile: compile the gradient step with XLA (useful on GPU).

    Returns:
        A :class:`CamResult`; ``.maps`` is ``float32`` ``(N, H, W)`` in ``[0, 1]``.

    Raises:
        LayerNotFoundError: ``layer`` is not in the model.
        ValueError: a bad method, class index or image array.
    """
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    layer = last_conv_layer(model) if layer is None else layer_path(model, layer)
    x, size = as_model_input(model, images)
    n = x.shape[0]
    classes = int(model.outputs[0].shape[-1])
    cls = _class_vector(class_index, n, classes)
    if method == "score_cam":
        return _score_cam(model, x, size, cls, layer, batch_size=batch_size, max_channels=max_channels)

    fn = _gradient_fn(model, layer, jit_compile=jit_compile)
    maps, used, probs = [], [], []
    for start in range(0, n, batch_size):
        acts, grads, logits, chosen = fn(x[start : start + batch_size], cls[start : start + batch_size])
        acts, grads = acts.numpy(), grads.numpy()
        if acts.ndim != 4:
            raise ValueError(f"layer {layer!r} outputs shape {acts.shape}; a CAM needs a 4-D feature map")
        weights = _grad_weights(acts, grads, method)
        maps.append(np.einsum("nhwk,nk->nhw", acts, weights))
        used.append(chosen.numpy())
        probs.append(scores_to_probabilities(model, logits.numpy()))
    raw = np.concatenate(maps)
    return CamResult(
        maps=_normalize(_upsample(_normalize(raw), size)),
        class_index=np.concatenate(used).astype(np.int64),
        probabilities=np.concatenate(probs).astype(np.float32),
        layer=layer,
        method=method,
        raw=_upsample(np.maximum(raw, 0.0), size),
    )


def cam_coverage(maps: np.ndarray, *, threshold: float = 0.01) -> np.ndarray:
    """The fraction of each map above ``threshold``: ``float32`` ``(N,)`` in ``[0, 1]``.

    Maps are scaled to their own maximum, so a low coverage (at ``threshold=0.5``, half the peak)
    means the class evidence at this layer is a few hot pixels or nothing: typical of early
    layers, which the class gradient barely reaches.

    Args:
        maps: ``(N, H, W)`` or ``(H, W)`` CAMs in ``[0, 1]``.
    """
    arr = np.asarray(maps, np.float32)
    arr = arr[None] if arr.ndim == 2 else arr
    return (arr > threshold).reshape(arr.shape[0], -1).mean(axis=1).astype(np.float32)


def _score_cam(model, x, size, cls, layer, *, batch_size: int, max_channels: int | None) -> CamResult:
    forward = forward_fn(model, [layer], head="logits")
    score_fn = forward_fn(model, [], head="logits")
    side = tuple(x.shape[1:3])
    maps, used, probs = [], [], []
    for i in range(x.shape[0]):
        acts, out = forward(x[i : i + 1])
        acts, out = acts.numpy()[0], scores_to_probabilities(model, out.numpy())[0]
        if acts.ndim != 3:
            raise ValueError(f"layer {layer!r} outputs shape {acts.shape}; a CAM needs a 4-D feature map")
        c = int(np.argmax(out)) if cls[i] < 0 else int(cls[i])
        channels = np.arange(acts.shape[-1])
        if max_channels is not None and max_channels < channels.size:
            variance = acts.reshape(-1, acts.shape[-1]).var(axis=0)
            channels = np.sort(np.argsort(-variance, kind="stable")[:max_channels])
        weights = np.zeros(acts.shape[-1], np.float32)
        for start in range(0, channels.size, batch_size):
            chunk = channels[start : start + batch_size]
            masks = _upsample(np.moveaxis(acts[..., chunk], -1, 0), side)  # (k, S, S)
            low = masks.reshape(len(chunk), -1).min(axis=1)[:, None, None]
            high = masks.reshape(len(chunk), -1).max(axis=1)[:, None, None]
            span = high - low
            masks = np.where(span > 0, (masks - low) / np.where(span > 0, span, 1.0), 0.0)
            masked = (x[i][None] * masks[..., None]).astype(np.float32)
            scores = scores_to_probabilities(model, score_fn(masked)[0].numpy())[:, c]
            weights[chunk] = np.where(span[:, 0, 0] > 0, scores, 0.0)
        maps.append(np.einsum("hwk,k->hw", acts, weights))
        used.append(c)
        probs.append(out)
    raw = np.stack(maps)
    return CamResult(
        maps=_normalize(_upsample(_normalize(raw), size)),
        class_index=np.asarray(used, np.int64),
        probabilities=np.stack(probs).astype(np.float32),
        layer=layer,
        method="score_cam",
        raw=_upsample(np.maximum(raw, 0.0), size),
    )


def grad_cam(model, images, *, class_index=None, layer=None, batch_size: int = 16) -> np.ndarray:
    """Grad-CAM maps ``float32`` ``(N, H, W)`` in ``[0, 1]``; see :func:`compute_cam`."""
    return compute_cam(model, images, method="grad_cam", class_index=class_index, layer=layer,
                       batch_size=batch_size).maps


def grad_cam_plus_plus(model, images, *, class_index=None, layer=None, batch_size: int = 16) -> np.ndarray:
    """Grad-CAM++ maps ``float32`` ``(N, H, W)`` in ``[0, 1]``; see :func:`compute_cam`."""
    return compute_cam(model, images, method="grad_cam_plus_plus", class_index=class_index,
                       layer=layer, batch_size=batch_size).maps


def score_cam(
    model, images, *, class_index=None, layer=None, max_channels: int | None = None, batch_size: int = 32
) -> np.ndarray:
    """Score-CAM maps ``float32`` ``(N, H, W)`` in ``[0, 1]``; see :func:`compute_cam`.

    Costs one forward pass per channel of ``layer`` per image (1280 on MobileNetV2's
    ``out_relu``); ``max_channels`` bounds that.
    """
    return compute_cam(model, images, method="score_cam", class_index=class_index, layer=layer,
                       batch_size=batch_size, max_channels=max_channels).maps


def cam_per_class(
    model, image, *, method: str = "grad_cam", layer=None, classes: Sequence[int] | None = None,
    max_channels: int | None = None, scale: str = "weighted",
) -> np.ndarray:
    """One map per class for one image: ``float32`` ``(C, H, W)`` in ``[0, 1]``.

    The ``maps`` of :func:`nsfwkit.viz.classmaps.class_maps` (which adds raw maps and captions).

    Args:
        image: ``(H, W, C)`` raw 0-255.
        classes: class indices to explain (default: all of the model's classes).
        scale: ``"weighted"`` (default, evidence × probability: each raw map times its class's
            probability, over the largest such peak), ``"shared"`` (every raw map divided by one
            common maximum: raw logit evidence, whatever the probability) or ``"per_map"`` (each
            map divided by its own maximum; brightness not comparable across classes).
    """
    from .classmaps import class_maps

    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] != 1:
        raise ValueError("cam_per_class takes one image")
    options = {} if max_channels is None else {"max_channels": max_channels}
    return class_maps(model, arr, method=method, layer=layer, classes=classes, scale=scale, **options).maps
