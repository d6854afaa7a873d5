"""No 'tf.function retracing' warnings from the kit: one compiled function per layer is not retracing."""

from __future__ import annotations

import logging

import numpy as np
import pytest

LAYERS = ["stem", "branch_1x1", "branch_3x3a", "branch_3x3b", "mixed"]


@pytest.fixture
def tf_warnings():
    import tensorflow as tf

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    tf.get_logger().addHandler(handler)
    yield seen
    tf.get_logger().removeHandler(handler)


def retracing(messages):
    return [m for m in messages if "triggered tf.function retracing" in m]


def test_genuine_retracing_still_warns(tf_warnings):
    from nsfwkit.viz.layers import compiled

    @compiled(autograph=False)
    def double(x):
        return x * 2

    for value in range(7):  # a new Python constant is a new trace every call
        double(value)
    assert retracing(tf_warnings), "the detector this test relies on did not fire"


def test_a_function_per_layer_is_not_reported_as_retracing(branching_model, tf_warnings):
    from nsfwkit.viz import activations, cam, filters

    x = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    for recipe in filters.RECIPES:
        filters.visualize_filters(branching_model, LAYERS, filters=2, recipe=recipe, steps=2, progress=False)
    for layer in LAYERS:
        activations.activations(branching_model, x, layers=[layer])
        cam.compute_cam(branching_model, x, layer=layer)
        cam.compute_cam(branching_model, x, layer=layer, method="score_cam")
    assert retracing(tf_warnings) == []
