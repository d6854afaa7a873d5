"""Pixel attributions and honest per-class maps: hand-computed values on tiny models, invariants."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit.viz import attributions as at
from nsfwkit.viz import cam, classmaps

from viz_helpers import (
    FLAT_A,
    FLAT_G,
    TINY_X,
    assert_same_model,
    build_flat_head_model,
    build_tiny_model,
    model_fingerprint,
)

# The flat-head model is linear in its input (identity 1x1 conv, Flatten, Dense): the gradient of
# class 0's logit with respect to the input is FLAT_G everywhere, and Integrated Gradients from a
# baseline b is exactly (x - b) * FLAT_G.
G0, G1 = FLAT_G[..., 0], FLAT_G[..., 1]
# abs-max over the two channels: [[max(1, .5), max(1, 1)], [max(2, 2), max(.5, .25)]] / 2
HAND_GRADIENTS_ABS_MAX = np.array([[0.5, 0.5], [1.0, 0.25]], np.float32)
# l2 over the channels: sqrt(1 + .25), sqrt(1 + 1), sqrt(4 + 4), sqrt(.25 + .0625), over sqrt(8)
HAND_GRADIENTS_L2 = np.sqrt(np.array([[1.25, 2.0], [8.0, 0.3125]])) / np.sqrt(8.0)
# LayerCAM at the identity conv: relu(g) * A summed over channels:
# channel 0: relu([[1, -1], [2, .5]]) * [[1, 2], [0, 3]] = [[1, 0], [0, 1.5]]
# channel 1: relu([[.5, 1], [-2, .25]]) * [[2, 0], [1, 1]] = [[1, 0], [0, .25]]
# sum [[2, 0], [0, 1.75]] / 2
HAND_LAYER_CAM = np.array([[1.0, 0.0], [0.0, 0.875]], np.float32)
# Grad-CAM of the tiny model's class 0 (test_viz_cam): x0 + 0.5 x1 over its maximum 4.
HAND_TINY_CLASS_0 = (TINY_X[..., 0] + 0.5 * TINY_X[..., 1]) / 4.0


def test_gradients_match_hand_computation():
    model = build_flat_head_model()
    result = at.compute_attribution(model, FLAT_A, method="gradients", class_index=0)
    assert result.maps.shape == (1, 2, 2) and result.maps.dtype == np.float32
    assert result.layer == at.INPUT and result.method == "gradients"
    # the logit's gradient, not the probability's (which would be p0 (1 - p0) (G0 - G1)-like)
    np.testing.assert_allclose(result.attributions[0], FLAT_G, atol=1e-6)
    np.testing.assert_allclose(result.maps[0], HAND_GRADIENTS_ABS_MAX, atol=1e-6)
    np.testing.assert_allclose(result.raw[0], 2.0 * HAND_GRADIENTS_ABS_MAX, atol=1e-6)
    l2 = at.gradients(model, FLAT_A, class_index=0, aggregate="l2")
    np.testing.assert_allclose(l2[0], HAND_GRADIENTS_L2, atol=1e-6)


@pytest.mark.parametrize("integration", at.INTEGRATIONS)
@pytest.mark.parametrize("baseline", ["black", 50.0, "blur"])
def test_integrated_gradients_on_a_linear_model_is_exact(integration, baseline):
    model = build_flat_head_model()
    x = FLAT_A * 40.0 + 10.0
    b = at.baseline_images(x[None], baseline, blur_sigma=0.5)[0]
    assert np.abs(x - b).max() > 10.0  # a baseline different from the image
    result = at.compute_attribution(model, x, method="integrated_gradients", class_index=0, steps=5,
                                    baseline=baseline, integration=integration, blur_sigma=0.5)
    expected = (x - b) * FLAT_G
    np.testing.assert_allclose(result.attributions[0], expected, rtol=1e-6, atol=1e-4)
    # completeness: sum of attributions = logit(x) - logit(baseline) = sum((x - b) * G)
    np.testing.assert_allclose(result.score_difference[0], expected.sum(), rtol=1e-5, atol=1e-4)
    assert abs(result.completeness_error[0]) < 1e-4 * max(1.0, abs(expected.sum()))
    magnitude = np.abs(expected).max(axis=-1)
    np.testing.assert_allclose(result.maps[0], magnitude / magnitude.max(), atol=1e-6)
    assert result.parameters["steps"] == 5 and result.parameters["integration"] == integration


def test_blur_baseline_hand_computed():
    # 3x3 image, sigma 1/3 of the side = 1 px, radius min(3, side - 1) = 2, reflecting borders.
    x = np.zeros((1, 3, 3, 1), np.float32)
    x[0, 1, 1, 0] = 9.0
    taps = np.exp(-0.5 * np.arange(-2, 3) ** 2)
    taps /= taps.sum()
    # reflect-padded row [.., 0, 9, 0, ..] = [9, 0, 0, 9, 0, 0, 9] around each of the three pixels
    row = np.array([0, 9, 0], float)
    padded = np.concatenate([row[[2, 1]], row, row[[1, 0]]])
    blurred_row = np.array([(padded[i : i + 5] * taps).sum() for i in range(3)])
    expected = np.outer(blurred_row, blurred_row) / 9.0
    np.testing.assert_allclose(at.blur(x, sigma=1 / 3)[0, ..., 0], expected, atol=1e-5)
    np.testing.assert_array_equal(at.blur(x, sigma=0.0), x)


def test_integration_paths():
    for steps in (2, 7, 32):
        for integration in at.INTEGRATIONS:
            alphas, weights = at.integration_path(steps, integration)
            assert alphas.shape == weights.shape == (steps,)
            assert np.isclose(weights.sum(), 1.0) and 0.0 <= alphas.min() and alphas.max() <= 1.0
            # exact for a cubic when the rule allows it: integral of 4a^3 over [0, 1] is 1
            if integration == "gausslegendre" and steps >= 2:
                assert np.isclose((weights * 4 * alphas**3).sum(), 1.0)
    a, w = at.integration_path(3, "trapezoid")
    np.testing.assert_allclose(a, [0, 0.5, 1])
    np.testing.assert_allclose(w, [0.25, 0.5, 0.25])


def test_integrated_gradients_completeness_on_a_nonlinear_model(branching_model):
    from nsfwkit.viz.layers import logits_model

    x = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    result = at.compute_attribution(branching_model, x, method="integrated_gradients", steps=64, baseline="grey")
    scores = logits_model(branching_model)
    c = result.class_index
    diff = (scores(x).numpy() - scores(np.full_like(x, at.GREY)).numpy())[np.arange(2), c]
    np.testing.assert_allclose(result.score_difference, diff, rtol=1e-4, atol=1e-6)
    # the recorded error is what it says, and small with 64 steps
    np.testing.assert_allclose(result.completeness_error, result.attributions.sum(axis=(1, 2, 3)) - diff,
                               rtol=1e-3, atol=1e-5)
    assert (np.abs(result.completeness_error) <= 0.05 * np.abs(diff) + 1e-4).all(), result.completeness_error


def test_smoothgrad_with_zero_noise_is_the_gradient(branching_model):
    x = np.random.default_rng(2).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    grad = at.compute_attribution(branching_model, x, method="gradients", class_index=[0, 1, 2])
    smooth = at.compute_attribution(branching_model, x, method="smoothgrad", class_index=[0, 1, 2], noise=0.0,
                                    samples=4)
    np.testing.assert_allclose(smooth.attributions, grad.attributions, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(smooth.maps, grad.maps, atol=1e-5)


def test_smoothgrad_noise_is_seeded_and_per_image(branching_model):
    x = np.random.default_rng(3).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    a = at.smoothgrad(branching_model, x, samples=6, seed=1)
    np.testing.assert_array_equal(a, at.smoothgrad(branching_model, x, samples=6, seed=1))
    assert np.abs(a - at.smoothgrad(branching_model, x, samples=6, seed=2)).max() > 1e-3
    # image 0's noise does not depend on what else is in the batch or the batch size
    np.testing.assert_allclose(at.smoothgrad(branching_model, x[:1], samples=6, seed=1, batch_size=4)[0], a[0],
                               atol=1e-6)
    grad = at.gradients(branching_model, x)
    assert np.abs(a - grad).max() > 1e-2  # the noise does something on a non-linear model


def test_smoothgrad_on_a_linear_model_is_the_gradient_for_any_noise():
    model = build_flat_head_model()
    result = at.compute_attribution(model, FLAT_A, method="smoothgrad", class_index=0, noise=0.5, samples=8)
    np.testing.assert_allclose(result.attributions[0], FLAT_G, atol=1e-5)


def test_layer_cam_matches_hand_computation(tiny_model):
    maps = at.layer_cam(build_flat_head_model(), FLAT_A, class_index=0, layer="conv")
    np.testing.assert_allclose(maps[0], HAND_LAYER_CAM, atol=1e-6)
    # GAP head: the gradient is W[k, c] / 16 everywhere, so class 0 = Grad-CAM, class 1 = channel 1 only
    maps = at.layer_cam(tiny_model, np.stack([TINY_X, TINY_X]), class_index=[0, 1])
    np.testing.assert_allclose(maps[0], HAND_TINY_CLASS_0, atol=1e-6)
    np.testing.assert_allclose(maps[1], TINY_X[..., 1] / TINY_X[..., 1].max(), atol=1e-6)
    result = at.compute_attribution(tiny_model, TINY_X, method="layer_cam")
    assert result.layer == "conv" and result.attributions is None and result.class_index.tolist() == [0]


def test_no_retracing_on_a_second_call(branching_model):
    x = np.random.default_rng(4).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    fn = at._input_gradient_fn(branching_model)
    at.gradients(branching_model, x)
    at.smoothgrad(branching_model, x[:2], samples=5, batch_size=4)
    at.integrated_gradients(branching_model, x, steps=7)
    assert fn.experimental_get_tracing_count() == 1
    at.gradients(branching_model, x[:1])
    at.integrated_gradients(branching_model, x, steps=7)
    assert fn.experimental_get_tracing_count() == 1
    at.layer_cam(branching_model, x)
    layer_fn = cam._gradient_fn(branching_model, "mixed")
    count = layer_fn.experimental_get_tracing_count()
    at.layer_cam(branching_model, x)
    assert layer_fn.experimental_get_tracing_count() == count


def _options(method):
    return {"samples": 3} if method == "smoothgrad" else {"steps": 4} if method == "integrated_gradients" else {}


def test_contract(branching_model):
    x = np.random.default_rng(5).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    for method in at.METHODS:
        result = at.compute_attribution(branching_model, x, method=method, **_options(method))
        assert result.maps.shape == result.raw.shape == (3, 16, 16), method
        assert result.maps.dtype == np.float32 and result.maps.min() >= 0 and result.maps.max() == pytest.approx(1)
        assert result.class_index.tolist() == np.argmax(result.probabilities, axis=1).tolist()
        np.testing.assert_allclose(result.probabilities, branching_model(x).numpy(), atol=1e-5)
        peak = result.raw.reshape(3, -1).max(axis=1)[:, None, None]
        np.testing.assert_allclose(result.maps, result.raw / peak, atol=1e-6)
        by_name = at.EXPLAINERS[method](branching_model, x, **_options(method))
        np.testing.assert_allclose(by_name, result.maps, atol=1e-6)


def test_nested_model_resized_input_and_unchanged(nested_model):
    before = model_fingerprint(nested_model)
    x = np.random.default_rng(5).uniform(0, 255, (2, 48, 80, 3)).astype(np.float32)  # resized to 64x64
    for method in at.METHODS:
        result = at.compute_attribution(nested_model, x, method=method, class_index=[0, 2], **_options(method))
        assert result.maps.shape == result.raw.shape == (2, 48, 80), method
        assert result.class_index.tolist() == [0, 2]
        if result.attributions is not None:
            assert result.attributions.shape == (2, 64, 64, 3)
    assert at.compute_attribution(nested_model, x, method="layer_cam").layer == "mobilenetv2_0.35_64/out_relu"
    assert_same_model(before, model_fingerprint(nested_model))


def test_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match="layer must be None"):
        at.gradients(tiny_model, TINY_X, layer="conv")
    with pytest.raises(ValueError, match="unknown attribution method"):
        at.compute_attribution(tiny_model, TINY_X, method="guided")
    with pytest.raises(ValueError, match="unknown explanation method"):
        at.explain(tiny_model, TINY_X, method="guided")
    with pytest.raises(ValueError, match="unknown aggregate"):
        at.gradients(tiny_model, TINY_X, aggregate="sum")
    with pytest.raises(ValueError, match="unknown baseline"):
        at.integrated_gradients(tiny_model, TINY_X, baseline="white")
    with pytest.raises(ValueError, match="does not broadcast"):
        at.integrated_gradients(tiny_model, TINY_X, baseline=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="smoothgrad: .*unexpected keyword.*steps"):
        at.compute_attribution(tiny_model, TINY_X, method="smoothgrad", steps=3)
    with pytest.raises(ValueError, match="trapezoid rule needs steps >= 2"):
        at.integrated_gradients(tiny_model, TINY_X, steps=1, integration="trapezoid")
    with pytest.raises(ValueError, match="out of range"):
        at.gradients(tiny_model, TINY_X, class_index=2)
    with pytest.raises(ValueError, match="LayerCAM needs a 4-D feature map"):
        at.layer_cam(tiny_model, TINY_X, layer="gap")


def test_explain_runs_every_method_by_name(tiny_model):
    assert set(at.EXPLAINERS) == set(at.ALL_METHODS) == set(cam.METHODS) | set(at.METHODS)
    for method in at.ALL_METHODS:
        result = at.explain(tiny_model, TINY_X, method=method, class_index=0)
        assert result.method == method and result.maps.shape == (1, 4, 4)
        assert result.raw is not None and result.raw.shape == (1, 4, 4)
    grad_cam = at.explain(tiny_model, TINY_X, method="grad_cam", class_index=0)
    # CamResult.raw is relu(sum_k w_k A_k) in logit units: (x0 + 0.5 x1) / 16
    np.testing.assert_allclose(grad_cam.raw[0], (TINY_X[..., 0] + 0.5 * TINY_X[..., 1]) / 16, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Honest per-class maps
# --------------------------------------------------------------------------------------------
def _unlikely_class_model():
    """The tiny model with class 1 = 0.05 (x0 + x1) mean - 10: p1 ~ 1e-5, a weak positive map.

    Grad-CAM raw maps (W / 16 times the activations): class 0 (x0 + 0.5 x1) / 16, peak 4 / 16;
    class 1 0.05 (x0 + x1) / 16, peak 0.05 * 4 / 16: one twentieth of class 0's.
    """
    model = build_tiny_model()
    dense = model.get_layer("dense")
    dense.set_weights([np.array([[1.0, 0.05], [0.5, 0.05]], np.float32), np.array([0.1, -10.0], np.float32)])
    return model


def test_shared_scale_keeps_an_unlikely_class_dark():
    model = _unlikely_class_model()
    shared = classmaps.class_maps(model, TINY_X, class_names=["likely", "unlikely"], scale="shared")
    assert shared.scale == "shared" and shared.class_index.tolist() == [0, 1]
    z1 = 0.05 * (TINY_X[..., 0].mean() + TINY_X[..., 1].mean()) - 10.0
    z0 = TINY_X[..., 0].mean() + 0.5 * TINY_X[..., 1].mean() + 0.1
    assert shared.probabilities[1] == pytest.approx(1 / (1 + np.exp(z0 - z1)), rel=1e-3)
    assert shared.probabilities[1] < 1e-4
    np.testing.assert_allclose(shared.maps[0], HAND_TINY_CLASS_0, atol=1e-6)
    np.testing.assert_allclose(shared.maps[1], 0.05 * (TINY_X[..., 0] + TINY_X[..., 1]) / 4.0, atol=1e-6)
    assert shared.maps[1].max() == pytest.approx(0.05, abs=1e-6)  # dark
    np.testing.assert_allclose(shared.divisor, [0.25, 0.25], rtol=1e-6)
    assert shared.captions[1].startswith("unlikely p=0.00, raw [0, 0.0125]")
    assert not shared.empty.any()
    assert "raw shared scale" in shared.scale_label
    per_map = classmaps.class_maps(model, TINY_X, scale="per_map")
    assert per_map.maps[1].max() == pytest.approx(1.0)  # the misleading bright spot, labelled
    assert "per-map scale" in per_map.scale_label
    # cam.cam_per_class: the class_maps scales, the old per-map behaviour on request
    np.testing.assert_allclose(cam.cam_per_class(model, TINY_X, scale="shared"), shared.maps, atol=1e-6)
    np.testing.assert_allclose(cam.cam_per_class(model, TINY_X, scale="per_map"),
                               cam.compute_cam(model, np.stack([TINY_X, TINY_X]), class_index=[0, 1]).maps, atol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        cam.cam_per_class(model, TINY_X, scale="global")


def _outshining_class_model():
    """The tiny model with class 1 = 2 x0 mean - 3.40625: p1 = 0.06 but twice class 0's raw Grad-CAM peak.

    Logits: z0 = 1.1875 + 0.5 * 1.0625 = 1.71875, z1 = 2 * 1.1875 - 3.40625 = -1.03125, so
    p1 = 1 / (1 + e^2.75) = 0.0601. Grad-CAM raw maps: class 0 (x0 + 0.5 x1) / 16, peak 4 / 16;
    class 1 2 x0 / 16, peak 8 / 16.
    """
    model = build_tiny_model()
    dense = model.get_layer("dense")
    dense.set_weights([np.array([[1.0, 2.0], [0.5, 0.0]], np.float32), np.array([0.0, -3.40625], np.float32)])
    return model


def test_default_scale_weights_evidence_by_probability():
    model = _outshining_class_model()
    p1 = 1 / (1 + np.exp(2.75))
    p0 = 1 - p1
    weighted = classmaps.class_maps(model, TINY_X, class_names=["top", "outshining"])
    assert weighted.scale == "weighted"
    np.testing.assert_allclose(weighted.probabilities, [p0, p1], rtol=1e-5)
    assert weighted.raw[1].max() == pytest.approx(2 * weighted.raw[0].max())  # more raw evidence than the top class
    # raw_c * p_c / max_k(p_k peak_k): the largest product is class 0's, p0 * 4 / 16
    np.testing.assert_allclose(weighted.maps[0], HAND_TINY_CLASS_0, atol=1e-6)
    np.testing.assert_allclose(weighted.maps[1], TINY_X[..., 0] * p1 / (2 * p0), atol=1e-6)
    np.testing.assert_allclose(weighted.divisor, [0.25, 0.25 * p0 / p1], rtol=1e-5)
    assert weighted.maps[1].max() == pytest.approx(4 * p1 / (2 * p0), rel=1e-5)  # 0.128: dim
    assert "evidence × probability: raw × p / 0.235" in weighted.scale_label
    # the raw shared scale makes the p = 0.06 class the brightest: what the default fixes
    shared = classmaps.class_maps(model, TINY_X, scale="shared")
    np.testing.assert_allclose(shared.maps[1], TINY_X[..., 0] / 4, atol=1e-6)
    np.testing.assert_allclose(shared.maps[0], HAND_TINY_CLASS_0 / 2, atol=1e-6)

    def brightness(result):
        return result.maps.reshape(2, -1).mean(axis=1)

    assert brightness(weighted)[1] < brightness(weighted)[0] / 5
    assert brightness(shared)[1] > brightness(shared)[0]
    np.testing.assert_allclose(cam.cam_per_class(model, TINY_X), weighted.maps, atol=1e-6)


def test_weighted_scale_of_a_zero_probability_class_is_black():
    model = _outshining_class_model()
    model.get_layer("dense").set_weights([np.array([[1.0, 2.0], [0.5, 0.0]], np.float32),
                                          np.array([0.0, -1000.0], np.float32)])
    weighted = classmaps.class_maps(model, TINY_X)
    assert weighted.probabilities[1] == 0.0
    assert np.isinf(weighted.divisor[1]) and np.all(weighted.maps[1] == 0)
    np.testing.assert_allclose(weighted.maps[0], HAND_TINY_CLASS_0, atol=1e-6)


def _two_conv_model():
    """Input -> identity 1x1 "early" -> identity 1x1 "conv" -> GAP -> Dense; class 1 has weights -1."""
    import keras

    inputs = keras.Input((4, 4, 2), name="image")
    early = keras.layers.Conv2D(2, 1, use_bias=False, name="early")
    last = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(last(early(inputs)))
    dense = keras.layers.Dense(2, activation="softmax", name="dense")
    model = keras.Model(inputs, dense(x), name="two_conv")
    for layer in (early, last):
        layer.set_weights([np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2)])
    dense.set_weights([np.array([[1.0, -1.0], [0.5, -1.0]], np.float32), np.zeros(2, np.float32)])
    return model


def test_an_empty_map_says_why():
    model = _two_conv_model()
    # activations are >= 0 and class 1's gradient is negative everywhere: relu leaves nothing.
    # logits: 1.1875 + 0.5 * 1.0625 = 1.71875 and -(1.1875 + 1.0625) = -2.25: p1 = 1 / (1 + e^3.96875) = 0.0185
    at_last = classmaps.class_maps(model, TINY_X, class_names=["a", "b"])
    assert at_last.empty.tolist() == [False, True]
    assert np.all(at_last.maps[1] == 0)
    assert at_last.captions[1] == "b p=0.02, raw [0, 0]; empty: no positive evidence for this class at conv"
    early = classmaps.class_maps(model, TINY_X, layer="early", class_names=["a", "b"])
    assert early.captions[1].endswith("empty: the class gradient barely reaches early; "
                                      "try the last conv layer (conv)")
    picture = np.concatenate([TINY_X, TINY_X[..., :1]], axis=-1) * 60  # a 3-channel view of the input
    fig = classmaps.plot_class_maps(picture, early)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "image" and titles[1].startswith("a p=0.98") and "empty" in titles[2]
    assert "evidence × probability" in fig._suptitle.get_text()


@pytest.mark.slow
def test_default_model_attributions(default_model, cat_image):
    model, spec = default_model
    before = model_fingerprint(model)
    images = np.stack([cat_image, cat_image[:, ::-1]])
    ig = at.compute_attribution(model, images, method="integrated_gradients", baseline="black")
    # completeness within 15 % of the logit difference with the default 64 Gauss-Legendre steps
    # (measured 8 %; 32 steps left 105 % on the first image: ReLU6 kinks along the path)
    assert ig.parameters["steps"] == 64
    assert (np.abs(ig.completeness_error) <= 0.15 * np.abs(ig.score_difference)).all(), ig.completeness_error
    for method in at.METHODS:
        maps = at.EXPLAINERS[method](model, images)
        assert maps.shape == (2, 224, 224) and maps.max() == pytest.approx(1.0)
    shared = classmaps.class_maps(model, cat_image, class_names=spec.class_names)
    assert shared.maps.max() == pytest.approx(1.0)
    # the classes the model gives p < 0.01 are darker than the top class on the default scale
    # (measured on the cat: mean 0.007, 0 and 0.06 against Neutral's 0.23)
    top = int(np.argmax(shared.probabilities))
    brightness = shared.maps.reshape(len(shared.maps), -1).mean(axis=1)
    unlikely = np.flatnonzero(shared.probabilities < 0.01)
    assert unlikely.size and (brightness[unlikely] < brightness[top] / 2).all(), brightness
    assert_same_model(before, model_fingerprint(model))


def test_relative_completeness_error_and_its_warning():
    rel = at.relative_completeness_error([0.5, -0.3, 0.0, 0.2], [10.0, -2.0, 0.0, 0.0])
    np.testing.assert_allclose(rel[:2], [0.05, 0.15])
    assert np.isnan(rel[2:]).all()  # no relative error over a zero score difference
    assert at.COMPLETENESS_TOLERANCE == 0.05
    assert at.completeness_warning(0.5, 10.0) is None  # 5 %: within
    assert at.completeness_warning(0.0, 0.0) is None  # 0 = 0: completeness holds
    assert at.completeness_warning(-0.3, -2.0, what="ig of Porn") == (
        "ig of Porn: completeness error 15.0% of the score difference (tolerance 5%): "
        "raise steps or use the blur baseline")
    assert at.completeness_warning(0.2, 0.0).endswith("while the baseline scores as the image does: "
                                                      "raise steps or use the blur baseline")


def test_class_maps_carry_the_completeness_check(tiny_model):
    ig = classmaps.class_maps(tiny_model, TINY_X, method="integrated_gradients", steps=3, baseline="black")
    direct = at.compute_attribution(tiny_model, np.stack([TINY_X, TINY_X]), method="integrated_gradients",
                                    class_index=[0, 1], steps=3, baseline="black")
    np.testing.assert_allclose(ig.completeness_error, direct.completeness_error)
    np.testing.assert_allclose(ig.score_difference, direct.score_difference)
    assert classmaps.class_maps(tiny_model, TINY_X).completeness_error is None
