"""The filter optimiser's pieces on their own: lucid-style transforms and the Fourier image, hand-checked."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit.viz import filters, transforms

# A 3x4 single-channel image whose pixel (y, x) holds 4 y + x.
RAMP = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
F = 0.5  # the fill value


def _warp(images, matrix):
    return transforms.warp(images, matrix, fill_value=F).numpy()


def _apply(matrix, x, y):
    """Where ``matrix`` (1, 3, 3) sends the point (x, y)."""
    return (np.asarray(matrix)[0] @ np.array([x, y, 1.0]))[:2]


def test_translation_by_known_offsets():
    out = _warp(RAMP, transforms.translation([[1.0, 2.0]]))[0, ..., 0]  # 1 right, 2 down
    expected = np.array([[F, F, F, F],
                         [F, F, F, F],
                         [F, 0, 1, 2]], np.float32)
    np.testing.assert_array_equal(out, expected)
    back = _warp(RAMP, transforms.translation([[-1.0, 0.0]]))[0, ..., 0]  # 1 left
    np.testing.assert_array_equal(back, [[1, 2, 3, F], [5, 6, 7, F], [9, 10, 11, F]])


def test_jitter_draws_whole_pixel_offsets_within_range():
    import tensorflow as tf

    seed = tf.constant([3, 0])
    m = transforms.jitter(64, seed, pixels=2).numpy()
    offsets = m[:, :2, 2]
    assert set(np.unique(offsets)) == {-2.0, -1.0, 0.0, 1.0, 2.0}  # whole pixels, both signs, the ends
    np.testing.assert_array_equal(m[:, :2, :2], np.tile(np.eye(2), (64, 1, 1)))  # a pure shift
    np.testing.assert_array_equal(transforms.jitter(64, seed, pixels=2).numpy(), m)  # same seed, same draw
    assert not np.array_equal(transforms.jitter(64, seed + 1, pixels=2).numpy(), m)
    np.testing.assert_array_equal(_warp(RAMP, transforms.jitter(1, seed, pixels=0)), RAMP)  # 0 px: identity


def test_rotation_by_zero_is_identity_and_by_90_is_rot90():
    np.testing.assert_array_equal(_warp(RAMP, transforms.rotation([0.0], centre=(1.0, 1.5))), RAMP)
    square = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    out = _warp(square, transforms.rotation([90.0], centre=(1.0, 1.0)))[0, ..., 0]
    # clockwise on screen: the top row becomes the right column
    np.testing.assert_allclose(out, [[6, 3, 0], [7, 4, 1], [8, 5, 2]], atol=1e-5)
    np.testing.assert_allclose(out, np.rot90(square[0, ..., 0], k=-1), atol=1e-5)


def test_scale_one_is_identity_and_two_doubles_about_the_centre():
    np.testing.assert_array_equal(_warp(RAMP, transforms.scaling([1.0], centre=(1.0, 1.5))), RAMP)
    row = np.arange(5, dtype=np.float32).reshape(1, 1, 5, 1)  # pixel x holds x
    out = _warp(row, transforms.scaling([2.0], centre=(0.0, 2.0)))[0, 0, :, 0]
    # output x reads the input at (x - 2) / 2 + 2
    np.testing.assert_allclose(out, [1.0, 1.5, 2.0, 2.5, 3.0], atol=1e-6)


def test_random_scale_and_rotate_draw_from_their_sets():
    import tensorflow as tf

    seed = tf.constant([5, 1])
    scales = (0.5, 2.0)
    s = transforms.random_scale(32, seed, scales=scales, centre=(0.0, 0.0)).numpy()
    assert set(np.unique(s[:, 0, 0])) == set(scales) and np.array_equal(s[:, 0, 0], s[:, 1, 1])
    r = transforms.random_rotate(64, seed, degrees=2, centre=(0.0, 0.0)).numpy()
    degrees = np.rad2deg(np.arctan2(r[:, 1, 0], r[:, 0, 0]))
    np.testing.assert_allclose(degrees, np.round(degrees), atol=1e-4)  # whole degrees
    assert set(np.round(degrees).astype(int)) == {-2, -1, 0, 1, 2}


def test_compose_applies_the_first_listed_first():
    scale, shift = transforms.scaling([2.0], centre=(0.0, 0.0)), transforms.translation([[1.0, 0.0]])
    np.testing.assert_allclose(_apply(transforms.compose(scale, shift), 1, 0), [3, 0])  # 1 * 2 + 1
    np.testing.assert_allclose(_apply(transforms.compose(shift, scale), 1, 0), [4, 0])  # (1 + 1) * 2
    np.testing.assert_allclose(_apply(transforms.compose(shift, shift, shift), 0, 5), [3, 5])


def test_composed_warp_is_the_closed_form_affine_of_the_quality_recipe():
    """Scale s and rotate theta about the centre c, then shift by t: output pixel p reads the input
    at R(theta)^T (p - c - t) / s + c, the matrix the quality recipe wrote out by hand before."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (3, 23, 19, 3)).astype(np.float32)
    s = np.array([1.05, 0.95, 1.0], np.float32)
    deg = np.array([3.0, -5.0, 0.0], np.float32)
    t = np.array([[5.0, -7.0], [-24.0, 3.0], [0.0, 0.0]], np.float32)
    cy, cx = 11.0, 9.0
    th = np.deg2rad(deg)
    a00, a01, a10, a11 = np.cos(th) / s, np.sin(th) / s, -np.sin(th) / s, np.cos(th) / s
    a02 = cx - (a00 * (cx + t[:, 0]) + a01 * (cy + t[:, 1]))
    a12 = cy - (a10 * (cx + t[:, 0]) + a11 * (cy + t[:, 1]))
    closed = np.stack([a00, a01, a02, a10, a11, a12], 1).astype(np.float32)
    matrix = transforms.compose(transforms.scaling(s, (cy, cx)), transforms.rotation(deg, (cy, cx)),
                                transforms.translation(t))
    ours = transforms.warp(tf.constant(images), matrix).numpy()
    np.testing.assert_allclose(ours, transforms.affine_warp(images, closed).numpy(), atol=1e-5)


def test_random_affine_compiles_with_xla_and_is_reproducible():
    import tensorflow as tf

    images = tf.constant(np.random.default_rng(1).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32))

    def draw(seed):
        return filters.random_affine(4, seed, (16, 16))

    def step(x, seed):
        return transforms.warp(x, filters.random_affine(tf.shape(x)[0], seed, (16, 16)))

    seed = tf.constant([7, 2])
    eager = step(images, seed).numpy()
    np.testing.assert_array_equal(step(images, seed).numpy(), eager)
    assert not np.allclose(step(images, seed + 1).numpy(), eager)
    # XLA draws its own stateless random stream: compare the compiled warp with an eager warp of
    # the compiled draw
    compiled = tf.function(step, jit_compile=True)(images, seed).numpy()
    drawn = tf.function(draw, jit_compile=True)(seed)
    np.testing.assert_allclose(compiled, transforms.warp(images, drawn).numpy(), atol=1e-5)
    for m in (drawn.numpy(), draw(seed).numpy()):
        scale = np.hypot(m[:, 0, 0], m[:, 1, 0])
        assert (np.abs(scale[:, None] - np.array(filters._SCALES)).min(axis=1) < 1e-6).all(), scale


def test_fourier_image_of_a_constant_spectrum():
    # Only the DC coefficient set: a flat image. The 1/f scale of DC is max(h, w) * sqrt(h w) = 16
    # for 4x4, the inverse FFT divides by h w = 16, then lucid divides by 4.
    params = np.zeros((1, 2, 3, 4, 3), np.float32)
    params[0, 0, 0, 0, 0] = 1.0
    params[0, 0, 1, 0, 0] = 2.0
    img = filters.fourier_image(params, (4, 4)).numpy()
    assert img.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(img[0, ..., 0], 0.25, atol=1e-6)
    np.testing.assert_allclose(img[0, ..., 1], 0.5, atol=1e-6)
    np.testing.assert_allclose(img[0, ..., 2], 0.0, atol=1e-6)


def test_decorrelate_colors_maps_a_channel_to_its_colour():
    unit = np.zeros((1, 1, 1, 3), np.float32)
    unit[..., 0] = 1.0
    # the first column of lucid's colour matrix, divided by its norm (the largest column norm)
    expected = np.array([0.26, 0.27, 0.27]) / np.sqrt(0.26**2 + 2 * 0.27**2)
    np.testing.assert_allclose(filters.decorrelate_colors(unit).numpy()[0, 0, 0], expected, atol=1e-6)


@pytest.mark.parametrize("size", [(4, 4), (5, 6)])
def test_unit_image_of_zero_parameters_is_mid_grey(size):
    h, w = size
    img = filters.unit_image(np.zeros((2, 2, 3, h, w // 2 + 1), np.float32), size).numpy()
    assert img.shape == (2, h, w, 3)
    np.testing.assert_allclose(img, 0.5)
