"""Filter visualisation: the optimiser raises its target channel, deterministically, in a batch."""

from __future__ import annotations

import numpy as np
import pytest

from viz_fixtures import branching_model, default_model, nested_model  # noqa: F401  (fixtures)

from nsfwkit.viz import filters
from nsfwkit.viz.layers import LayerNotFoundError


@pytest.mark.parametrize("recipe,steps", [("classic", 30), ("quality", 30)])
def test_optimiser_raises_the_target_channel_on_the_default_model(default_model, recipe, steps):
    model, _ = default_model
    result = filters.maximize_filters(
        model, "block_7_depthwise_relu", filters=[1, 2, 3], recipe=recipe, steps=steps, seed=0
    )
    assert result.images.shape == (3, 224, 224, 3) and result.images.dtype == np.uint8
    assert result.inputs.min() >= 0 and result.inputs.max() <= 255
    assert result.channels == 384 and result.filters == (1, 2, 3)
    # every filter's own channel goes up by a large factor over the random start
    gain = result.activation_reached / np.maximum(result.activation_start, 1e-3)
    assert (gain > 5).all(), (result.activation_start, result.activation_reached)
    assert (result.objective_reached > result.objective_start + 0.5).all()


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
