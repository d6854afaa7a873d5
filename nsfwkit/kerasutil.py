"""Keras helpers shared across the kit: per-model caches, traced inference, dtype-policy copies.

Nothing here imports Keras or TensorFlow at import time; the functions do, when called.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Hashable

__all__ = ["cached", "inference_fn", "output_layer", "to_dtype_policy"]

# model -> {key: value}; weak keys, so an entry goes when its model is garbage-collected.
_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def cached(model, key: Hashable, factory: Callable[[], Any]):
    """Per-model memo: ``factory()`` runs once per ``(model, key)``, its value is dropped with the model.

    Values must not hold a strong reference to ``model`` (that would keep it alive): sub-models
    sharing its layers are fine; a traced function calls the model through a ``weakref`` (see
    :func:`inference_fn`).
    """
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = factory()
    return per_model[key]


def inference_fn(model, image_size: int):
    """``model(x, training=False)`` traced once for float32 ``(N, image_size, image_size, 3)`` batches.

    Cached per model and size (tracing costs ~0.4 s for MobileNetV2), so repeated calls with any
    batch size reuse one graph.
    """
    size = int(image_size)

    def build():
        import tensorflow as tf

        ref = weakref.ref(model)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)], reduce_retracing=True)
        def infer(x):
            return ref()(x, training=False)

        return infer

    return cached(model, ("inference", size), build)


def output_layer(model):
    """The layer producing the model's (single) output, looking inside nested models."""
    import keras

    layer = model
    while isinstance(layer, keras.Model):
        layers = [child for child in layer.layers if not isinstance(child, keras.layers.InputLayer)]
        if not layers:
            break
        layer = layers[-1]
    return layer


def to_dtype_policy(model, policy: str):
    """A copy of ``model`` whose layers compute in ``policy`` (e.g. ``mixed_float16``).

    Nested models (a ``keras.applications`` backbone is one nested layer) are cloned
    recursively, so their layers compute in ``policy`` too. The layer producing the output
    (:func:`output_layer`, found inside nested models) stays float32, so scores and softmax keep
    full precision. Weights are copied; the input model is unchanged.
    """
    import keras

    final = output_layer(model)

    def clone(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32" if layer is final else policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
