"""Deletion / insertion scores and sanity checks: hand-computed values on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit.viz import attributions as at
from nsfwkit.viz import cam
from nsfwkit.viz import faithfulness as fa

from viz_helpers import (
    PATCH,
    PATCH_BIAS,
    PATCH_W,
    assert_same_model,
    build_patch_model,
    model_fingerprint,
    patch_images,
)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_oracle_curves_match_hand_computation():
    model, x = build_patch_model(), patch_images(2)
    oracle = np.zeros((2, 8, 8), np.float32)
    oracle[(slice(None),) + PATCH] = 1.0
    result = fa.deletion_insertion(model, x, oracle, baseline="black", steps=32)
    # After removing the top c of 64 pixels, min(c, 4) patch pixels (3 values of 255 each) are black:
    # p0 = sigmoid(0.01 * 765 * (4 - min(c, 4)) - 20); inserting reveals min(c, 4) of them.
    fractions = np.linspace(0, 1, 32)
    removed = np.minimum(np.rint(fractions * 64), 4)
    deletion = _sigmoid(PATCH_W * 765 * (4 - removed) + PATCH_BIAS)
    insertion = _sigmoid(PATCH_W * 765 * removed + PATCH_BIAS)
    np.testing.assert_allclose(result.fractions, fractions)
    for i in range(2):
        np.testing.assert_allclose(result.deletion[i], deletion, atol=1e-5)
        np.testing.assert_allclose(result.insertion[i], insertion, atol=1e-5)
    trapezoid = lambda y: ((y[1:] + y[:-1]) / 2 * np.diff(fractions)).sum()  # noqa: E731
    np.testing.assert_allclose(result.deletion_auc, trapezoid(deletion), atol=1e-6)
    np.testing.assert_allclose(result.insertion_auc, trapezoid(insertion), atol=1e-6)
    assert result.class_index.tolist() == [0, 0] and result.baseline == "black"
    np.testing.assert_allclose(result.difference, result.insertion_auc - result.deletion_auc)


@pytest.mark.parametrize("baseline", ["black", "grey"])
def test_an_oracle_map_beats_a_random_map(baseline):
    model, x = build_patch_model(), patch_images(8)
    oracle = np.zeros((8, 8, 8), np.float32)
    oracle[(slice(None),) + PATCH] = 1.0
    noise = np.random.default_rng(1).uniform(size=(8, 8, 8)).astype(np.float32)
    good = fa.deletion_insertion(model, x, oracle, baseline=baseline)
    bad = fa.deletion_insertion(model, x, noise, baseline=baseline)
    assert good.deletion_auc.mean() < 0.1
    assert bad.deletion_auc.mean() - good.deletion_auc.mean() > 0.25
    assert good.insertion_auc.mean() > 0.9
    assert good.insertion_auc.mean() - bad.insertion_auc.mean() > 0.25


def test_the_input_gradient_is_the_oracle_of_a_linear_model():
    # The patch model's gradient is non-zero only on the patch: gradients score like the oracle.
    model, x = build_patch_model(), patch_images(4)
    maps = at.gradients(model, x)
    assert np.all(maps[(slice(None),) + PATCH] == 1.0) and maps.sum() == 4 * 4
    results = fa.faithfulness(model, x, methods=["gradients"], baseline="black")
    assert list(results) == ["gradients"] and results["gradients"].deletion_auc.max() < 0.1


def test_area_under_curve_and_pixel_ranks():
    np.testing.assert_allclose(fa.area_under_curve([0, 0.5, 1], [1, 0, 0]), 0.25)
    np.testing.assert_allclose(fa.area_under_curve([0, 0.5, 1], [[1, 1, 1], [0, 1, 0]]), [1.0, 0.5])
    ranks = fa.pixel_ranks(np.array([[[2.0, 1.0], [1.0, 0.0]]]), seed=0)
    assert ranks[0, 0, 0] == 0 and ranks[0, 1, 1] == 3 and sorted(ranks[0].reshape(-1)) == [0, 1, 2, 3]
    # ties are broken by a seeded permutation: a flat map gives a random order, not a raster scan
    flat = np.zeros((1, 16, 16))
    order = [fa.pixel_ranks(flat, seed=s)[0].reshape(-1) for s in (0, 0, 1)]
    np.testing.assert_array_equal(order[0], order[1])
    assert not np.array_equal(order[0], order[2]) and not np.array_equal(order[0], np.arange(256))


def test_maps_at_any_resolution_and_batched_forward_passes():
    from nsfwkit.viz.layers import forward_fn

    model, x = build_patch_model(), patch_images(3)
    coarse = np.zeros((3, 4, 4), np.float32)
    coarse[:, 1, 2] = 1.0  # upsampled to 8x8, its peak is inside the patch
    fine = cam._upsample(coarse, (8, 8))
    a = fa.deletion_insertion(model, x, coarse)
    b = fa.deletion_insertion(model, x, fine)
    np.testing.assert_array_equal(a.deletion, b.deletion)
    fn = forward_fn(model, [], head="logits")
    traces = fn.experimental_get_tracing_count()
    fa.deletion_insertion(model, x, fine)
    assert fn.experimental_get_tracing_count() == traces  # the same shapes: no retracing
    with pytest.raises(ValueError, match="maps must be"):
        fa.deletion_insertion(model, x, fine[:2])
    with pytest.raises(ValueError, match="steps must be >= 2"):
        fa.deletion_insertion(model, x, fine, steps=1)


def test_spearman_with_ties_and_constant_maps():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = np.round(rng.uniform(size=(3, 5, 5)), 1)  # many ties
    b = np.round(a + rng.normal(scale=0.3, size=a.shape), 1)
    rho = fa.spearman(a, b)
    for i in range(3):
        np.testing.assert_allclose(rho[i], spearmanr(a[i].reshape(-1), b[i].reshape(-1)).statistic, atol=1e-12)
    np.testing.assert_allclose(fa.spearman(a, a), 1.0)
    assert np.isnan(fa.spearman(a[:1], np.zeros((1, 5, 5))))[0]


# --------------------------------------------------------------------------------------------
# Model-parameter randomisation
# --------------------------------------------------------------------------------------------
def build_gap_model():
    """Input (8, 8, 3) -> Conv2D(6, 1, relu) "conv" -> GAP -> Dense(3, softmax) "dense", fixed weights.

    Grad-CAM at "conv" is relu(A @ W[:, c]) (the GAP makes dlogit/dA = W / 64 everywhere).
    """
    import keras

    inputs = keras.Input((8, 8, 3), name="image")
    conv = keras.layers.Conv2D(6, 1, activation="relu", name="conv")
    dense = keras.layers.Dense(3, activation="softmax", name="dense")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D(name="gap")(conv(inputs))), name="gap")
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(1, 1, 3, 6)) / 100, rng.normal(size=6) / 10
    conv.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    dense.set_weights([rng.normal(size=(6, 3)).astype(np.float32), np.zeros(3, np.float32)])
    return model


def edge_map(model, images, *, class_index=None, layer=None):
    """A "saliency map" that ignores the model: gradient magnitude of the grey image."""
    grey = np.asarray(images, np.float32).mean(axis=-1)
    gy, gx = np.gradient(grey, axis=(1, 2))
    edges = np.hypot(gx, gy)
    return edges / edges.max(axis=(1, 2), keepdims=True)


def _hand_grad_cam(model, x, c):
    kernel, bias = model.get_layer("conv").get_weights()
    acts = np.maximum(x @ kernel[0, 0] + bias, 0.0)
    cams = np.maximum(acts @ model.get_layer("dense").get_weights()[0][:, c], 0.0)
    return cams / cams.max(axis=(1, 2), keepdims=True)


def test_cascade_changes_grad_cam_and_flags_a_model_independent_map():
    from scipy.stats import spearmanr

    model = build_gap_model()
    before = model_fingerprint(model)
    x = np.random.default_rng(2).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    methods = {"grad_cam": cam.grad_cam, "edges": edge_map}
    result = fa.sanity_check(model, x, methods=methods, seed=0)
    assert fa.cascade_groups(model) == [("dense",), ("conv",)]
    assert result.steps == (1, 2) and result.labels == ("dense", "conv")
    assert result.layers == (("dense",), ("dense", "conv"))
    c = np.argmax(model(x).numpy(), axis=1)
    assert result.class_index.tolist() == c.tolist()
    # step 1 by hand: the trained conv, the re-initialised dense (same seed -> same weights)
    randomized = fa.randomized_copy(model, ["dense"], seed=0)
    original = np.stack([_hand_grad_cam(model, x[i : i + 1], c[i])[0] for i in range(4)])
    after = np.stack([_hand_grad_cam(randomized, x[i : i + 1], c[i])[0] for i in range(4)])
    np.testing.assert_allclose(result.original[0], original, atol=1e-5)
    np.testing.assert_allclose(result.maps[0, 0], after, atol=1e-5)
    expected = [spearmanr(original[i].reshape(-1), after[i].reshape(-1)).statistic for i in range(4)]
    np.testing.assert_allclose(result.rank_correlation[0, 0], expected, atol=1e-6)
    assert result.mean_correlation[0, 0] < fa.SURVIVAL_THRESHOLD  # Grad-CAM changes: passes
    np.testing.assert_allclose(result.rank_correlation[1], 1.0)  # the edge map cannot change
    assert result.flagged == ("edges",)
    assert_same_model(before, model_fingerprint(model))  # the cascade ran on a copy


def test_randomized_copy_is_seeded_and_leaves_the_rest():
    import keras

    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="dense")(x))
    for name in ("bn", "conv"):  # not the initial values
        model.get_layer(name).set_weights([w + 2.0 for w in model.get_layer(name).get_weights()])
    before = model_fingerprint(model)
    assert fa.cascade_groups(model) == [("dense",), ("dw",), ("bn", "conv")]
    a = fa.randomized_copy(model, ["bn", "conv"], seed=3)
    b = fa.randomized_copy(model, ["conv", "bn"], seed=3)
    c = fa.randomized_copy(model, ["bn", "conv"], seed=4)
    for name in ("conv", "bn"):
        for wa, wb, wc, w0 in zip(a.get_layer(name).get_weights(), b.get_layer(name).get_weights(),
                                  c.get_layer(name).get_weights(), model.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)  # the same seed whatever the order
            assert not np.array_equal(wa, w0)
            if name == "conv" and wa.ndim > 1:
                assert not np.array_equal(wa, wc)
    gamma, beta, mean, var = a.get_layer("bn").get_weights()  # the layer's own initializers: identity
    assert (gamma == 1).all() and (beta == 0).all() and (mean == 0).all() and (var == 1).all()
    assert (a.get_layer("conv").get_weights()[1] == 0).all()  # zero bias
    for name in ("dw", "dense"):
        for wa, w0 in zip(a.get_layer(name).get_weights(), model.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(wa, w0)
    dw = fa.randomized_copy(model, ["dw"], seed=0).get_layer("dw").get_weights()[0]
    assert not np.array_equal(dw, model.get_layer("dw").get_weights()[0])  # DepthwiseConv2D's kernel
    assert_same_model(before, model_fingerprint(model))


def test_sanity_check_with_named_methods_and_options(branching_model):
    before = model_fingerprint(branching_model)
    x = np.random.default_rng(3).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    result = fa.sanity_check(branching_model, x, methods=["grad_cam", "gradients", "score_cam"],
                             steps=[1, 3, 99], options={"score_cam": {"max_channels": 2}})
    groups = fa.cascade_groups(branching_model)
    assert len(groups) == 5 and result.steps == (1, 3, 5)
    assert result.labels == ("predictions", groups[2][-1], "stem")
    assert result.maps.shape == (3, 3, 2, 16, 16) and result.rank_correlation.shape == (3, 3, 2)
    assert result.mean_correlation.shape == (3, 3)
    assert_same_model(before, model_fingerprint(branching_model))
    with pytest.raises(ValueError, match="flag_step"):
        fa.sanity_check(branching_model, x, methods=["gradients"], steps=[1], flag_step=1)
    with pytest.raises(ValueError, match="unknown methods"):
        fa.sanity_check(branching_model, x, methods=["guided"])


def test_data_randomization_on_a_tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="dense")(x))
    before = model_fingerprint(model)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 60, (64, 8, 8, 3)).astype(np.float32)
    labels = (np.arange(64) % 2).astype(np.int32)
    for i in np.flatnonzero(labels):  # class 1: a bright 3x3 square somewhere
        r, c = rng.integers(0, 6, 2)
        images[i, r : r + 3, c : c + 3] = 255.0
    result = fa.data_randomization_check(model, images, labels, methods={"grad_cam": cam.grad_cam, "edges": edge_map},
                                         epochs=30, batch_size=16)
    assert result.accuracy_true >= 0.95  # the task is learnable
    assert result.maps_true.shape == result.maps_random.shape == (2, 64, 8, 8)
    np.testing.assert_allclose(result.rank_correlation[1], 1.0)
    assert result.mean_correlation[0] < fa.SURVIVAL_THRESHOLD
    assert result.flagged == ("edges",)
    assert_same_model(before, model_fingerprint(model))  # copies were trained, not the model


def test_plots_return_figures(branching_model):
    x = np.random.default_rng(3).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    sanity = fa.sanity_check(branching_model, x, methods={"gradients": at.gradients, "edges": edge_map}, steps=[1, 5])
    fig = fa.plot_sanity(sanity, image=x[0])
    assert len(fig.axes) == 2 * 4  # image, trained, two steps
    assert "flagged" in fig.axes[4].texts[0].get_text()  # the edge map's row
    scores = fa.faithfulness(branching_model, x, methods=["gradients", "grad_cam"], steps=8)
    fig = fa.plot_faithfulness(scores)
    assert len(fig.axes) == 2
    assert [line.get_label().split()[0] for line in fig.axes[0].get_lines()] == ["gradients", "grad_cam"]


def test_plot_data_randomization():
    maps = np.linspace(0, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    result = fa.DataRandomizationResult(
        methods=("gradients", "edges"), accuracy_true=1.0, accuracy_random=0.75, maps_true=maps,
        maps_random=maps[:, ::-1], rank_correlation=np.array([[0.1, 0.2, 0.3], [1.0, 0.9, 0.8]]),
        threshold=0.5, flagged=("edges",))
    fig = fa.plot_data_randomization(result, index=2, image=np.full((4, 4, 3), 200.0))
    assert len(fig.axes) == 2 * 3  # image, true-label map, random-label map
    assert [ax.get_title() for ax in fig.axes[1:3]] == ["true labels", "random labels, rho 0.30"]
    assert fig.axes[5].get_title() == "random labels, rho 0.80"
    np.testing.assert_allclose(fig.axes[1].get_images()[0].get_array(), maps[0, 2])
    np.testing.assert_allclose(fig.axes[2].get_images()[0].get_array(), maps[0, 0])  # maps_random[0, 2]
    assert fig.axes[0].texts[0].get_text() == "gradients"
    assert fig.axes[3].texts[0].get_text() == "edges\n(flagged: survives)"
    title = fig._suptitle.get_text()
    assert "training accuracy 1.00 (true labels), 0.75 (random labels)" in title
    assert len(fa.plot_data_randomization(result).axes) == 2 * 2  # without the image column


@pytest.mark.slow
def test_default_model_faithfulness_and_sanity(default_model, cat_image):
    model, _ = default_model
    before = model_fingerprint(model)
    scores = fa.faithfulness(model, cat_image, methods=["grad_cam", "gradients"])
    for result in scores.values():
        assert result.deletion.shape == (1, 32) and 0 <= result.deletion_auc[0] <= 1
    sanity = fa.sanity_check(model, cat_image, methods={"grad_cam": cam.grad_cam, "edges": edge_map}, steps=[1])
    assert "edges" in sanity.flagged and "grad_cam" not in sanity.flagged
    assert_same_model(before, model_fingerprint(model))
