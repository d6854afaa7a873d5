"""Helpers for the nsfwkit.viz tests (tests/test_viz_*.py, test_widgets.py): tiny models with
hand-set weights and the values worked by hand on them, and a check that a model was not changed.
The fixtures built on them (``tiny_model``, ``branching_model``, ...) are in conftest.py.
"""

from __future__ import annotations

import numpy as np

#: Hand-set weights of the tiny model: 1x1 identity conv, then global average pool, then
#: Dense(2, softmax) with these weights, so logit_c = sum_k W[k, c] * mean(A_k) + b_c.
TINY_W = np.array([[1.0, -2.0], [0.5, 1.0]], np.float32)
TINY_B = np.array([0.1, -0.3], np.float32)
#: A fixed 4x4x2 input; A = x at the conv layer.
TINY_X = np.array(
    [
        [[1.0, 0.0], [2.0, 1.0], [0.0, 3.0], [1.0, 1.0]],
        [[0.0, 2.0], [3.0, 0.0], [1.0, 1.0], [0.0, 0.0]],
        [[2.0, 2.0], [1.0, 0.0], [0.0, 1.0], [4.0, 0.0]],
        [[0.0, 1.0], [1.0, 2.0], [2.0, 0.0], [1.0, 3.0]],
    ],
    np.float32,
)


def build_tiny_model(activation: str | None = "softmax", units: int = 2):
    """Input (4, 4, 2) -> Conv2D 1x1 identity "conv" -> GAP -> Dense(units, activation) "dense".

    The Dense kernel/bias are the first ``units`` columns of ``TINY_W`` / ``TINY_B``;
    ``activation=None`` gives a model that outputs raw logits.
    """
    import keras

    inputs = keras.Input((4, 4, 2), name="image")
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")
    x = conv(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    dense = keras.layers.Dense(units, activation=activation, name="dense")
    outputs = dense(x)
    model = keras.Model(inputs, outputs, name="tiny")
    conv.set_weights([np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2)])
    dense.set_weights([TINY_W[:, :units], TINY_B[:units]])
    return model


#: A 2x2x2 feature map (channels last) and the gradient of class 0's logit with respect to it,
#: for :func:`build_flat_head_model` (Flatten + Dense: dlogit_0/dA = the kernel's column 0).
FLAT_A = np.stack([[[1.0, 2.0], [0.0, 3.0]], [[2.0, 0.0], [1.0, 1.0]]], axis=-1).astype(np.float32)
FLAT_G = np.stack([[[1.0, -1.0], [2.0, 0.5]], [[0.5, 1.0], [-2.0, 0.25]]], axis=-1).astype(np.float32)


def build_flat_head_model():
    """Input (2, 2, 2) -> identity 1x1 "conv" -> Flatten -> Dense(2, softmax) whose class-0
    column is ``FLAT_G`` (so the gradient varies over space and has negative entries)."""
    import keras

    inputs = keras.Input((2, 2, 2), name="image")
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")
    x = keras.layers.Flatten(name="flat")(conv(inputs))
    dense = keras.layers.Dense(2, activation="softmax", name="dense")
    model = keras.Model(inputs, dense(x), name="flat_head")
    conv.set_weights([np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2)])
    kernel = np.stack([FLAT_G.reshape(-1), np.linspace(-1, 1, 8)], axis=1).astype(np.float32)
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    return model


def build_branching_model(seed: int = 0):
    """An Inception-like block: two conv branches concatenated ("mixed"), GAP, Dense softmax."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    a = keras.layers.Conv2D(3, 1, activation="relu", name="branch_1x1")(x)
    b = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="branch_3x3a")(x)
    b = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="branch_3x3b")(b)
    m = keras.layers.Concatenate(name="mixed")([a, b])
    g = keras.layers.GlobalAveragePooling2D(name="gap")(m)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(g)
    return keras.Model(inputs, out, name="branching")


def build_nested_model(seed: int = 0, size: int = 64):
    """keras.applications.MobileNetV2(weights=None) used as a layer inside a 3-class classifier."""
    import keras

    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(size, size, 3), pooling="avg", alpha=0.35
    )
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    x = backbone(x)
    out = keras.layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, out, name="nested")


def model_fingerprint(model):
    """Everything a visualisation must not change about a model."""
    return {
        "n_layers": len(model.layers),
        "names": [l.name for l in model.layers],
        "activations": [getattr(getattr(l, "activation", None), "__name__", None) for l in model.layers],
        "weights": [w.copy() for w in model.get_weights()],
        "outputs": [tuple(o.shape) for o in model.outputs],
    }


def assert_same_model(before, after):
    assert before["n_layers"] == after["n_layers"]
    assert before["names"] == after["names"]
    assert before["activations"] == after["activations"]
    assert before["outputs"] == after["outputs"]
    assert len(before["weights"]) == len(after["weights"])
    for a, b in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(a, b)


#: The only pixels :func:`build_patch_model` looks at: 4 of 64.
PATCH = (slice(2, 4), slice(5, 7))
#: Weight of each patch value in class 0's logit, and the class-0 bias.
PATCH_W = 0.01
PATCH_BIAS = -20.0


def build_patch_model(conv: bool = False):
    """Input (8, 8, 3) -> Flatten -> Dense(2, softmax): logit_0 = 0.01 * sum(patch) - 20, logit_1 = 0.

    ``conv=True`` puts an identity 1x1 ``Conv2D`` "conv" before the Flatten (the same function,
    with a feature map for the CAM methods).
    """
    import keras

    inputs = keras.Input((8, 8, 3), name="image")
    x = inputs
    if conv:
        layer = keras.layers.Conv2D(3, 1, use_bias=False, name="conv")
        x = layer(x)
        layer.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)])
    dense = keras.layers.Dense(2, activation="softmax", name="dense")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(x)), name="patch")
    kernel = np.zeros((8, 8, 3, 2), np.float32)
    kernel[PATCH + (slice(None), 0)] = PATCH_W
    dense.set_weights([kernel.reshape(-1, 2), np.array([PATCH_BIAS, 0.0], np.float32)])
    return model


def patch_images(n: int = 8, seed: int = 0) -> np.ndarray:
    """``n`` random 8x8 images (0-100) with the patch at 255 (class 0 is the top-1)."""
    x = np.random.default_rng(seed).uniform(0, 100, (n, 8, 8, 3)).astype(np.float32)
    x[(slice(None),) + PATCH] = 255.0
    return x


def build_kinked_model(threshold: float):
    """Input (8, 8, 3) -> identity 1x1 Conv2D "conv" -> GAP -> Dense(1, relu) "hidden" -> Dense(2, softmax).

    logit_0 = relu(mean(x) - threshold), logit_1 = 0: on the straight path from a black baseline
    to ``x`` the gradient is 0 until ``alpha * mean(x) > threshold``, then 1 / 192 per value.
    """
    import keras

    inputs = keras.Input((8, 8, 3), name="image")
    conv = keras.layers.Conv2D(3, 1, use_bias=False, name="conv")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(conv(inputs))
    hidden = keras.layers.Dense(1, activation="relu", name="hidden")
    dense = keras.layers.Dense(2, activation="softmax", name="dense")
    model = keras.Model(inputs, dense(hidden(x)), name="kinked")
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)])
    hidden.set_weights([np.full((3, 1), 1 / 3, np.float32), np.array([-threshold], np.float32)])
    dense.set_weights([np.array([[1.0, 0.0]], np.float32), np.zeros(2, np.float32)])
    return model
