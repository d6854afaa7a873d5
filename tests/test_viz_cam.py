"""Class activation maps: hand-computed values on a tiny model, invariants, real graphs."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit.viz import cam
from nsfwkit.viz.layers import LayerNotFoundError

from viz_helpers import (
    FLAT_A,
    TINY_B,
    TINY_W,
    TINY_X,
    assert_same_model,
    build_flat_head_model,
    build_tiny_model,
    model_fingerprint,
)

# Grad-CAM of the tiny model, worked by hand: with A = x and logit_c = sum_k W[k,c] mean(A_k),
# dlogit_c/dA_k = W[k,c]/16, so cam_c = relu(sum_k W[k,c] x_k) / max.
# class 0: x0 + 0.5 x1 (max 4 at (2,3)); class 1: relu(-2 x0 + x1) (max 3 at (0,2)).
HAND_GRAD_CAM_0 = np.array(
    [[0.25, 0.625, 0.375, 0.375], [0.25, 0.75, 0.375, 0.0], [0.75, 0.25, 0.125, 1.0], [0.125, 0.5, 0.5, 0.625]],
    np.float32,
)
HAND_GRAD_CAM_1 = np.array(
    [[0, 0, 1, 0], [2 / 3, 0, 0, 0], [0, 0, 1 / 3, 0], [1 / 3, 0, 0, 1 / 3]], np.float32
)


def test_grad_cam_matches_hand_computation(tiny_model):
    maps = cam.grad_cam(tiny_model, np.stack([TINY_X, TINY_X]), class_index=[0, 1], layer="conv")
    assert maps.shape == (2, 4, 4) and maps.dtype == np.float32
    np.testing.assert_allclose(maps[0], HAND_GRAD_CAM_0, atol=1e-6)
    np.testing.assert_allclose(maps[1], HAND_GRAD_CAM_1, atol=1e-6)


def test_grad_cam_uses_logits_not_probabilities(tiny_model):
    # Gradients of the softmax probability would weight the channels by W[:,0] - W[:,1] = (3, -0.5).
    prob_based = np.maximum(3 * TINY_X[..., 0] - 0.5 * TINY_X[..., 1], 0)
    prob_based /= prob_based.max()
    maps = cam.grad_cam(tiny_model, TINY_X, class_index=0)
    assert np.abs(maps[0] - prob_based).max() > 0.1
    np.testing.assert_allclose(maps[0], HAND_GRAD_CAM_0, atol=1e-6)


def test_default_class_is_top1(tiny_model):
    # logits: 1.1875 + 0.5 * 1.0625 + 0.1 = 1.819 vs -2 * 1.1875 + 1.0625 - 0.3 = -1.6125 -> class 0
    result = cam.compute_cam(tiny_model, TINY_X)
    assert result.class_index.tolist() == [0]
    np.testing.assert_allclose(result.maps[0], HAND_GRAD_CAM_0, atol=1e-6)
    z = np.array([1.81875, -1.6125])
    np.testing.assert_allclose(result.probabilities[0], np.exp(z) / np.exp(z).sum(), rtol=1e-5)


def test_grad_cam_plus_plus_matches_hand_computation():
    # Worked by hand (A = FLAT_A, g = FLAT_G; alpha = 1 / (2 + S g) where g != 0, S = sum A):
    # channel 0: S = 6, g = [[1, -1], [2, .5]] -> alpha = [[1/8, -1/4], [1/14, 1/5]];
    #   normalised over g > 0 by 1/8 + 1/14 + 1/5 = 111/280;
    #   w0 = (1/8 + 2/14 + .5/5) / (111/280) = 103/111.
    # channel 1: S = 4, g = [[.5, 1], [-2, .25]] -> alpha = [[1/4, 1/6], [-1/6, 1/3]];
    #   normalised by 1/4 + 1/6 + 1/3 = 3/4; w1 = (.5/4 + 1/6 + .25/3) / (3/4) = 1/2.
    # Not normalising (the old formula) gives w = (103/280, 9/24); normalising over all positions
    # (tf-keras-vis) (103/41, 9/14); Grad-CAM (0.625, -0.0625).
    w = np.array([103 / 111, 1 / 2])
    expected = FLAT_A @ w
    expected /= expected.max()
    maps = cam.grad_cam_plus_plus(build_flat_head_model(), FLAT_A, class_index=0, layer="conv")
    assert maps.shape == (1, 2, 2)
    np.testing.assert_allclose(maps[0], expected, atol=1e-6)
    for other in (np.array([103 / 280, 9 / 24]), np.array([103 / 41, 9 / 14]), np.array([0.625, -0.0625])):
        wrong = np.maximum(FLAT_A @ other, 0)
        assert np.abs(maps[0] - wrong / wrong.max()).max() > 0.02


def test_grad_cam_plus_plus_with_constant_gradients_is_grad_cam(tiny_model):
    # With a GAP head g_k = W[k,c]/16 is constant over space: the normalised alpha is 1/16 and
    # w_k = relu(g_k), i.e. Grad-CAM with relu'd weights. Class 0 (W = 1, 0.5): the Grad-CAM map;
    # class 1 (W = -2, 1): only channel 1.
    maps = cam.grad_cam_plus_plus(tiny_model, np.stack([TINY_X, TINY_X]), class_index=[0, 1])
    np.testing.assert_allclose(maps[0], HAND_GRAD_CAM_0, atol=1e-6)
    np.testing.assert_allclose(maps[1], TINY_X[..., 1] / TINY_X[..., 1].max(), atol=1e-6)


def test_score_cam_matches_numpy_reference(tiny_model):
    def probs(x):
        z = x.mean(axis=(0, 1)) @ TINY_W + TINY_B
        e = np.exp(z - z.max())
        return e / e.sum()

    for c in (0, 1):
        masks = [TINY_X[..., k] / TINY_X[..., k].max() for k in range(2)]  # min is 0 for both
        weights = np.array([probs(TINY_X * m[..., None])[c] for m in masks])
        expected = np.maximum(TINY_X @ weights, 0)
        expected /= expected.max()
        maps = cam.score_cam(tiny_model, TINY_X, class_index=c)
        np.testing.assert_allclose(maps[0], expected, atol=1e-5)


def _tiny_logits(x, units=2):
    return x.mean(axis=(0, 1)) @ TINY_W[:, :units] + TINY_B[:units]


def test_logits_output_model_gets_probabilities():
    # A model that outputs raw logits: Score-CAM weights and probabilities are the softmax of the
    # scores, so everything equals the softmax model's.
    softmax_model, logits_model = build_tiny_model(), build_tiny_model(activation=None)
    for method in cam.METHODS:
        a = cam.compute_cam(softmax_model, TINY_X, method=method, class_index=1)
        b = cam.compute_cam(logits_model, TINY_X, method=method, class_index=1)
        np.testing.assert_allclose(b.maps, a.maps, atol=1e-5)
        np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-6)
        assert abs(b.probabilities.sum() - 1) < 1e-5


@pytest.mark.parametrize("activation", ["sigmoid", None])
def test_single_unit_binary_model(activation):
    # One sigmoid unit (or its raw logit): the probability is sigmoid(z), not a softmax over one
    # unit (always 1); Score-CAM weights are sigmoid of the masked inputs' logits.
    model = build_tiny_model(activation=activation, units=1)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    result = cam.compute_cam(model, TINY_X, method="score_cam")
    assert result.class_index.tolist() == [0]
    np.testing.assert_allclose(result.probabilities[0], sigmoid(_tiny_logits(TINY_X, 1)), rtol=1e-5)
    masks = [TINY_X[..., k] / TINY_X[..., k].max() for k in range(2)]
    weights = np.array([sigmoid(_tiny_logits(TINY_X * m[..., None], 1))[0] for m in masks])
    expected = np.maximum(TINY_X @ weights, 0)
    np.testing.assert_allclose(result.maps[0], expected / expected.max(), atol=1e-5)
    grad = cam.compute_cam(model, TINY_X, method="grad_cam")
    np.testing.assert_allclose(grad.probabilities, result.probabilities, rtol=1e-5)


def test_cam_at_the_images_resolution(tiny_model):
    big = np.repeat(np.repeat(TINY_X, 3, axis=0), 3, axis=1)  # 12x12, resized to 4x4 for the model
    maps = cam.grad_cam(tiny_model, big, class_index=0)
    assert maps.shape == (1, 12, 12)
    assert 0.0 <= maps.min() and maps.max() == pytest.approx(1.0)


def test_bad_arguments(tiny_model):
    with pytest.raises(LayerNotFoundError, match="no layer 'conv_x'.*did you mean conv"):
        cam.grad_cam(tiny_model, TINY_X, layer="conv_x")
    with pytest.raises(ValueError, match="out of range"):
        cam.grad_cam(tiny_model, TINY_X, class_index=5)
    with pytest.raises(ValueError, match="2 entries for 1 images"):
        cam.grad_cam(tiny_model, TINY_X, class_index=[0, 1])
    with pytest.raises(ValueError, match="unknown CAM method"):
        cam.compute_cam(tiny_model, TINY_X, method="guided")
    with pytest.raises(ValueError, match="4-D feature map"):
        cam.grad_cam(tiny_model, TINY_X, layer="gap")


def test_tiny_model_unchanged(tiny_model):
    before = model_fingerprint(tiny_model)
    out_before = tiny_model(TINY_X[None]).numpy()
    for method in cam.METHODS:
        cam.compute_cam(tiny_model, TINY_X, method=method)
    assert_same_model(before, model_fingerprint(tiny_model))
    assert tiny_model.layers[-1].activation.__name__ == "softmax"
    np.testing.assert_array_equal(tiny_model(TINY_X[None]).numpy(), out_before)


def _reference_cam(features, kernel, c, size):
    """For GAP + Dense heads Grad-CAM equals CAM: relu(A @ W[:, c]), normalised, upsampled."""
    import tensorflow as tf

    raw = np.maximum(features @ kernel[:, c], 0)
    raw = raw / raw.max(axis=(1, 2), keepdims=True)
    up = tf.image.resize(raw[..., None], size).numpy()[..., 0]
    return up / up.max(axis=(1, 2), keepdims=True)


def test_branching_model(branching_model):
    import keras

    x = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    features = keras.Model(branching_model.input, branching_model.get_layer("mixed").output)(x).numpy()
    kernel = branching_model.get_layer("predictions").get_weights()[0]
    auto = cam.compute_cam(branching_model, x, class_index=1)
    assert auto.layer == "mixed"  # the last conv-like layer, found automatically
    np.testing.assert_allclose(auto.maps, _reference_cam(features, kernel, 1, (16, 16)), atol=1e-5)
    for method in ("grad_cam_plus_plus", "score_cam"):
        maps = cam.compute_cam(branching_model, x, method=method).maps
        assert maps.shape == (2, 16, 16) and 0 <= maps.min() and maps.max() <= 1


def test_nested_backbone(nested_model):
    import keras

    head = nested_model.get_layer("head")
    kernel, bias = head.get_weights()
    # positive weights, different per class, so each reference map is non-degenerate
    head.set_weights([np.abs(np.random.default_rng(5).normal(size=kernel.shape)).astype(np.float32), bias])
    before = model_fingerprint(nested_model)
    backbone = nested_model.get_layer("mobilenetv2_0.35_64")
    x = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    result = cam.compute_cam(nested_model, x, class_index=[0, 2])
    assert result.layer == "mobilenetv2_0.35_64/out_relu"
    inner = keras.Model(backbone.input, backbone.get_layer("out_relu").output)
    features = inner(x / 127.5 - 1.0).numpy()
    kernel = nested_model.get_layer("head").get_weights()[0]
    for i, c in enumerate([0, 2]):
        ref = _reference_cam(features[i : i + 1], kernel, c, (64, 64))
        np.testing.assert_allclose(result.maps[i], ref[0], atol=1e-4)
    # by path, by plain inner name, and an earlier inner layer
    by_name = cam.grad_cam(nested_model, x, class_index=[0, 2], layer="out_relu")
    np.testing.assert_allclose(by_name, result.maps, atol=1e-6)
    early = cam.grad_cam(nested_model, x, layer="mobilenetv2_0.35_64/block_6_expand_relu")
    assert early.shape == (2, 64, 64)
    assert_same_model(before, model_fingerprint(nested_model))


def test_keras_application_with_softmax_inside_the_nested_model():
    from nsfwkit import zoo

    model, _ = zoo.keras_application("MobileNetV2", weights=None, image_size=64)
    assert model.layers[-1].get_layer("predictions").activation.__name__ == "softmax"
    x = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    result = cam.compute_cam(model, x, class_index=7)
    assert result.maps.shape == (1, 64, 64) and result.maps.max() == pytest.approx(1.0)
    assert model.layers[-1].get_layer("predictions").activation.__name__ == "softmax"


def test_default_model_invariants(default_model, cat_image):
    model, spec = default_model
    before = model_fingerprint(model)
    images = np.stack([cat_image, cat_image[::-1]])
    for method in cam.METHODS:
        result = cam.compute_cam(model, images, method=method, layer=spec.last_conv_layer, max_channels=32)
        assert result.maps.shape == (2, 224, 224)
        assert result.maps.dtype == np.float32
        assert result.maps.min() >= 0.0 and result.maps.max() == pytest.approx(1.0)
        assert result.layer == "out_relu"
        assert result.class_index.tolist() == np.argmax(result.probabilities, axis=1).tolist()
    per_class = cam.cam_per_class(model, cat_image, scale="per_map")  # distinct maps, each stretched
    assert per_class.shape == (5, 224, 224)
    diffs = [np.abs(per_class[0] - per_class[c]).mean() for c in range(1, 5)]
    assert min(diffs) > 0.01, diffs
    assert_same_model(before, model_fingerprint(model))


@pytest.mark.slow
def test_inception_v3_mixed10():
    from nsfwkit import zoo

    model, spec = zoo.load("inception_v3")
    assert spec.last_conv_layer == "mixed10"
    x = np.random.default_rng(4).uniform(0, 255, (1, 150, 200, 3)).astype(np.float32)
    result = cam.compute_cam(model, x)
    assert result.layer == "mixed10"
    assert result.maps.shape == (1, 150, 200) and result.maps.max() == pytest.approx(1.0)
    assert model.layers[-1].activation.__name__ == "softmax"


def test_cam_coverage_hand_computed():
    maps = np.array([[[0.0, 0.5], [0.005, 1.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    np.testing.assert_allclose(cam.cam_coverage(maps), [0.5, 0.0])
    np.testing.assert_allclose(cam.cam_coverage(maps[0], threshold=0.6), [0.25])
