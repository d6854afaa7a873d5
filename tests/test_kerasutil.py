"""Shared Keras helpers: the per-model cache lets models go, traced inference, dtype-policy copies."""

from __future__ import annotations

import gc
import weakref

import numpy as np

from nsfwkit import kerasutil


def _tiny(units: int = 2):
    import keras

    inputs = keras.Input((4, 4, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(inputs)
    return keras.Model(inputs, keras.layers.Dense(units, activation="softmax", name="dense")(x))


def _nested():
    """image -> Dense "stem" -> [inner model: Dense "hidden" -> Dense "head" (softmax)]: the output
    layer sits inside the nested model."""
    import keras

    keras.utils.set_random_seed(0)
    inner_in = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inner_in)
    inner = keras.Model(inner_in, keras.layers.Dense(2, activation="softmax", name="head")(hidden), name="inner")
    inputs = keras.Input((3,), name="image")
    return keras.Model(inputs, inner(keras.layers.Dense(3, name="stem")(inputs)), name="outer")


def test_cached_runs_the_factory_once_per_model_and_key():
    a, b = _tiny(), _tiny()
    calls = []

    def factory(tag):
        return lambda: calls.append(tag) or tag

    assert kerasutil.cached(a, "k", factory("a/k")) == "a/k"
    assert kerasutil.cached(a, "k", factory("again")) == "a/k"  # memoised
    assert kerasutil.cached(a, "j", factory("a/j")) == "a/j"
    assert kerasutil.cached(b, "k", factory("b/k")) == "b/k"  # per model
    assert calls == ["a/k", "a/j", "b/k"]


def test_cached_functions_let_the_model_be_garbage_collected():
    from nsfwkit.viz import layers

    model = _tiny()
    x = np.ones((1, 4, 4, 3), np.float32)
    kerasutil.inference_fn(model, 4)(x)
    layers.forward_fn(model, ["gap"], head="logits")(x)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_inference_fn_is_one_trace_for_any_batch_size():
    model = _tiny()
    fn = kerasutil.inference_fn(model, 4)
    assert kerasutil.inference_fn(model, 4) is fn
    assert kerasutil.inference_fn(model, 8) is not fn
    x = np.random.default_rng(0).uniform(0, 255, (5, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(fn(x[:3]).numpy(), model(x[:3]).numpy(), rtol=1e-6)
    np.testing.assert_allclose(fn(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert fn.experimental_get_tracing_count() == 1


def test_output_layer_looks_inside_nested_models():
    model = _nested()
    assert kerasutil.output_layer(model).name == "head"
    assert kerasutil.output_layer(_tiny()).name == "dense"


def test_to_dtype_policy_keeps_the_nested_output_layer_float32():
    model = _nested()
    mixed = kerasutil.to_dtype_policy(model, "mixed_bfloat16")
    inner = mixed.get_layer("inner")
    assert mixed.get_layer("stem").compute_dtype == "bfloat16"
    assert inner.get_layer("hidden").compute_dtype == "bfloat16"
    assert inner.get_layer("head").compute_dtype == "float32"  # float32 probabilities
    assert all(v.dtype == "float32" for v in mixed.weights)  # mixed policy: float32 variables
    for a, b in zip(model.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("stem").compute_dtype == "float32"  # the input model is unchanged
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    out = mixed(x)
    assert out.dtype == "float32"
    np.testing.assert_allclose(out.numpy(), model(x).numpy(), atol=2e-2)
    back = kerasutil.to_dtype_policy(mixed, "float32")
    assert back.get_layer("inner").get_layer("hidden").compute_dtype == "float32"
