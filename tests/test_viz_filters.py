"""Filter visualisation: the optimiser raises its target channel, deterministically, in a batch."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit.viz import filters
from nsfwkit.viz.layers import LayerNotFoundError


@pytest.mark.parametrize("recipe,steps", [("classic", 30), ("quality", 30)])
def test_optimiser_raises_the_target_channel_on_the_default_model(default_model, recipe, steps):
    import tensorflow as tf

    from nsfwkit.viz.layers import feature_model

    model, _ = default_model
    layer, chosen = "block_7_depthwise_relu", [1, 2, 3]
    result = filters.maximize_filters(model, layer, filters=chosen, recipe=recipe, steps=steps, seed=0)
    assert result.images.shape == (3, 224, 224, 3) and result.images.dtype == np.uint8
    assert result.inputs.min() >= 0 and result.inputs.max() <= 255
    assert result.channels == 384 and result.filters == (1, 2, 3)
    # The objective rises far beyond how much it varies between random starts (seeds 0..5);
    # measured: increase 0.9-5.0, spread 0.002-0.03.
    starts = np.stack([
        filters.maximize_filters(model, layer, filters=chosen, recipe=recipe, steps=0, seed=s).objective_start
        for s in range(6)
    ])
    np.testing.assert_allclose(starts[0], result.objective_start, rtol=1e-5, atol=1e-6)
    increase = result.objective_reached - result.objective_start
    assert (increase > 0.5).all() and (increase > 20 * starts.std(axis=0)).all(), (increase, starts.std(axis=0))
    # Selective: image i drives channel filters[i] above that channel on the images optimised
    # for the other filters.
    pre = feature_model(model, [layer], head=None, pre_activation=True)
    feats = np.asarray(tf.nest.flatten(pre(result.inputs, training=False))[0])
    b = result.parameters["border"]
    assert b == 1  # 14x14 map
    means = feats[:, b:-b, b:-b, :].mean(axis=(1, 2))[:, chosen]  # (image, filter)
    np.testing.assert_allclose(np.diag(means), result.objective_reached, rtol=1e-4, atol=1e-4)
    for i in range(3):
        others = np.delete(means[:, i], i)
        assert means[i, i] > others.max() + 0.5, means
    # Activation gain only where the ReLU6 output was alive at the start (a 0 start would make
    # any ratio meaningless).
    live = result.activation_start > 0.005
    assert live.sum() >= 2, result.activation_start
    assert (result.activation_reached[live] / result.activation_start[live] > 5).all(), (
        result.activation_start, result.activation_reached)
    assert np.isinf(result.gain[~live & (result.activation_start <= 0)]).all()


@pytest.mark.parametrize("recipe", filters.RECIPES)
def test_jit_compile_on_cpu(branching_model, recipe):
    # XLA has no kernel for ImageProjectiveTransformV3: the quality recipe must compile whole.
    eager = filters.maximize_filters(branching_model, "mixed", filters=4, recipe=recipe, steps=4, seed=3,
                                     progress=False)
    jit = filters.maximize_filters(branching_model, "mixed", filters=4, recipe=recipe, steps=4, seed=3,
                                   jit_compile=True, progress=False)
    assert np.isfinite(jit.inputs).all() and jit.images.shape == eager.images.shape
    np.testing.assert_allclose(jit.objective_start, eager.objective_start, atol=1e-5)
    np.testing.assert_allclose(jit.objective_reached, eager.objective_reached, rtol=0.05, atol=0.02)
    if recipe == "classic":  # (Adam's g / sqrt(v) amplifies rounding where gradients are ~0)
        np.testing.assert_allclose(jit.inputs, eager.inputs, atol=0.05)


def test_affine_warp_matches_the_image_projective_transform():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 23, 19, 3)).astype(np.float32)
    theta = np.deg2rad(rng.uniform(-5, 5, 4))
    scale = np.array([0.95, 1.0, 1.05, 0.975])
    matrix = np.stack([np.cos(theta) / scale, np.sin(theta) / scale, rng.integers(-24, 25, 4),
                       -np.sin(theta) / scale, np.cos(theta) / scale, rng.integers(-24, 25, 4)], 1)
    matrix[2, 2] += 0.37  # a sub-pixel shift
    matrix = matrix.astype(np.float32)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=np.concatenate([matrix, np.zeros((4, 2), np.float32)], 1),
        output_shape=[23, 19], fill_value=0.5, interpolation="BILINEAR", fill_mode="CONSTANT").numpy()
    ours = filters.affine_warp(tf.constant(images), tf.constant(matrix), fill_value=0.5).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    assert (ours == 0.5).any() and (ours != 0.5).any()  # both fill and image pixels exercised
    compiled = tf.function(lambda x, m: filters.affine_warp(x, m, fill_value=0.5), jit_compile=True)
    np.testing.assert_allclose(compiled(images, matrix).numpy(), expected, atol=1e-5)
    # identity: the input itself
    eye = np.tile(np.array([[1, 0, 0, 0, 1, 0]], np.float32), (4, 1))
    np.testing.assert_allclose(filters.affine_warp(tf.constant(images), tf.constant(eye)).numpy(), images)


def test_progress_on_by_default(branching_model, capsys):
    filters.maximize_filters(branching_model, "stem", filters=1, recipe="classic", steps=2)
    assert "stem (classic)" in capsys.readouterr().err
    filters.maximize_filters(branching_model, "stem", filters=1, recipe="classic", steps=2, progress=False)
    assert "stem" not in capsys.readouterr().err


def test_each_image_maximises_its_own_filter(branching_model):
    # Image i maximises channel i; its channel i should be higher than other images' channel i.
    import keras

    result = filters.maximize_filters(branching_model, "mixed", filters=[0, 1, 2, 3], recipe="classic",
                                      steps=40, step_size=4.0, border=0)
    feats = keras.Model(branching_model.input, branching_model.get_layer("mixed").output)(result.inputs).numpy()
    means = feats.mean(axis=(1, 2))[:, :4]  # (image, channel)
    live = [i for i in range(4) if means[:, i].max() > 0]
    assert live, means
    for i in live:
        assert means[i, i] == means[:, i].max(), means


def test_deterministic_for_a_seed(branching_model):
    for recipe in filters.RECIPES:
        a = filters.maximize_filters(branching_model, "branch_3x3b", filters=2, recipe=recipe, steps=5, seed=7)
        b = filters.maximize_filters(branching_model, "branch_3x3b", filters=2, recipe=recipe, steps=5, seed=7)
        c = filters.maximize_filters(branching_model, "branch_3x3b", filters=2, recipe=recipe, steps=5, seed=8)
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.activation_reached, b.activation_reached)
        assert not np.array_equal(a.inputs, c.inputs)


def test_zero_steps_reports_the_start(branching_model):
    result = filters.maximize_filters(branching_model, "stem", filters=2, recipe="classic", steps=0)
    np.testing.assert_array_equal(result.activation_start, result.activation_reached)


def test_nested_backbone_layer(nested_model):
    before = [w.copy() for w in nested_model.get_weights()]
    results = filters.visualize_filters(nested_model, ["mobilenetv2_0.35_64/block_3_expand_relu"],
                                        filters=2, recipe="quality", steps=3)
    assert results[0].layer == "mobilenetv2_0.35_64/block_3_expand_relu"
    assert results[0].images.shape == (2, 64, 64, 3)
    for a, b in zip(before, nested_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_default_layers_spread(default_model):
    model, _ = default_model
    layers = filters.default_filter_layers(model)
    assert layers == ["block_2_depthwise_relu", "block_7_depthwise_relu", "block_12_expand_relu", "out_relu"]


def test_bad_arguments(branching_model):
    with pytest.raises(LayerNotFoundError, match="no layer 'mixd'.*mixed"):
        filters.maximize_filters(branching_model, "mixd")
    with pytest.raises(ValueError, match="unknown recipe"):
        filters.maximize_filters(branching_model, "mixed", recipe="fancy")
    with pytest.raises(ValueError, match=r"out of range for 'mixed' \(6 channels\)"):
        filters.maximize_filters(branching_model, "mixed", filters=[6])
    with pytest.raises(ValueError, match="4-D feature map"):
        filters.maximize_filters(branching_model, "gap")
    result = filters.maximize_filters(branching_model, "mixed", filters=50, recipe="classic", steps=1)
    assert result.filters == tuple(range(6))  # capped at the layer's channel count
