"""Tests of dermnet.data.augment: exact geometry, colour maths, blur, JPEG, determinism."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from dermnet.data.augment import (
    augment_batch,
    colour_matrices,
    compute_transforms,
    gaussian_blur,
    make_random_transforms,
    transform_images,
    transform_images_v3,
)
from dermnet.data.augment_config import AugmentConfig

SEED = tf.constant([3, 4], tf.int64)


def random_batch(count=4, height=24, width=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), np.uint8)


def ramp_batch(height=21, width=31):
    """One image whose every channel equals its column index: bilinear maps it exactly."""
    columns = np.broadcast_to(np.arange(width, dtype=np.uint8)[None, :, None], (height, width, 3))
    return np.ascontiguousarray(columns[None])


def transforms(size, angle=0.0, zoom=1.0, shear=0.0, shift=(0.0, 0.0), flip=(False, False)):
    """Sampling maps [1, 8] of a single image from plain numbers."""
    return compute_transforms(
        tf.constant(size), tf.constant([angle]), tf.constant([zoom]), tf.constant([shear]),
        tf.constant([shift]), tf.constant([flip]),
    )


def test_identity_config_returns_the_input_unchanged():
    images = random_batch()
    assert AugmentConfig().is_identity
    np.testing.assert_array_equal(augment_batch(images, SEED, AugmentConfig()), images)


def test_identity_transform_is_exact():
    images = random_batch()
    identity = tf.tile(transforms([24, 32]), [4, 1])
    np.testing.assert_array_equal(transform_images(images, identity), images)


@pytest.mark.parametrize("flip, expected", [((True, False), np.fliplr), ((False, True), np.flipud)])
def test_flip_is_exact(flip, expected):
    image = random_batch(count=1)
    flipped = transform_images(image, transforms([24, 32], flip=flip)).numpy()[0]
    np.testing.assert_array_equal(flipped, expected(image[0]))


@pytest.mark.parametrize("size", [7, 8])
def test_positive_quarter_turn_equals_numpy_rot90(size):
    # Sign convention: +90 degrees turns the content counter-clockwise, as np.rot90.
    image = random_batch(count=1, height=size, width=size)
    turned = transform_images(image, transforms([size, size], angle=90.0)).numpy()[0]
    np.testing.assert_array_equal(turned, np.rot90(image[0]))
    turned_back = transform_images(image, transforms([size, size], angle=-90.0)).numpy()[0]
    np.testing.assert_array_equal(turned_back, np.rot90(image[0], k=-1))


def test_zoom_in_by_two_halves_the_ramp_about_the_centre():
    ramp = ramp_batch()
    zoomed = transform_images(ramp, transforms([21, 31], zoom=2.0)).numpy()[0, :, :, 0]
    expected = np.floor(15.0 + (np.arange(31) - 15.0) / 2.0 + 0.5)  # centre column 15
    np.testing.assert_array_equal(zoomed, np.broadcast_to(expected, (21, 31)))


def test_shear_shifts_each_row_by_tan_angle_times_its_offset():
    ramp = ramp_batch()
    sheared = transform_images(ramp, transforms([21, 31], shear=10.0)).numpy()[0, :, :, 0]
    source = np.arange(31)[None, :] + np.tan(np.radians(10.0)) * (np.arange(21)[:, None] - 10)
    inside = (source >= 0) & (source <= 30)
    np.testing.assert_array_equal(sheared[inside], np.floor(source + 0.5)[inside])


def test_translation_moves_content_right_by_the_fraction_of_width():
    image = random_batch(count=1, height=20, width=40)
    moved = transform_images(image, transforms([20, 40], shift=(0.25, 0.0))).numpy()[0]
    np.testing.assert_array_equal(moved[:, 10:], image[0, :, :30])
    np.testing.assert_array_equal(moved[:, :10], image[0, :, 9::-1])  # reflect fill


@pytest.mark.parametrize("fill_mode", ["reflect", "nearest", "constant"])
def test_resampler_matches_tensorflow_projective_op(fill_mode):
    # TF's op truncates uint8 where ours rounds, so they may differ by one grey level.
    images = random_batch(count=8)
    maps = make_random_transforms(images, SEED, AugmentConfig.geometric())
    ours = transform_images(images, maps, fill_mode, 0.0).numpy().astype(int)
    reference = transform_images_v3(images, maps, fill_mode, 0.0).numpy().astype(int)
    assert np.abs(ours - reference).max() <= 1


def bilinear_reference(image, transform, numpy_mode, margin=64):
    """Bilinear sampling in numpy of one image [h, w, C] through a map [8], outside pixels
    taken from np.pad(mode=numpy_mode): the textbook definition, no folding."""
    height, width = image.shape[:2]
    padded = np.pad(image.astype(np.float64), [(margin, margin), (margin, margin), (0, 0)],
                    mode=numpy_mode)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
    a0, a1, a2, b0, b1, b2 = transform[:6]
    x, y = a0 * columns + a1 * rows + a2 + margin, b0 * columns + b1 * rows + b2 + margin
    left, top = np.floor(x).astype(int), np.floor(y).astype(int)
    right_weight, bottom_weight = (x - left)[..., None], (y - top)[..., None]
    upper = (1 - right_weight) * padded[top, left] + right_weight * padded[top, left + 1]
    lower = (1 - right_weight) * padded[top + 1, left] + right_weight * padded[top + 1, left + 1]
    return (1 - bottom_weight) * upper + bottom_weight * lower


@pytest.mark.parametrize("fill_mode, numpy_mode", [
    ("reflect", "symmetric"), ("wrap", "wrap"), ("nearest", "edge"),
])
def test_fill_modes_match_numpy_padding_far_outside_the_image(fill_mode, numpy_mode):
    # Zooming out to 0.4 samples up to about two image sizes away from the centre.
    images = random_batch(count=2, height=12, width=16)
    maps = tf.concat([transforms([12, 16], angle=30.0, zoom=0.4, shift=(0.3, -0.2)),
                      transforms([12, 16], zoom=0.4, shear=20.0, flip=(True, True))], 0)
    ours = transform_images(images, maps, fill_mode).numpy()
    for image, transform, result in zip(images, maps.numpy(), ours):
        expected = bilinear_reference(image, transform.astype(np.float64), numpy_mode)
        assert np.abs(result - expected).max() <= 0.5 + 1e-3  # rounding to uint8 only


def test_geometric_augmentation_keeps_dtype_shape_and_depends_on_the_seed():
    images = random_batch(count=6)
    config = AugmentConfig(rotation=30.0, zoom=(0.8, 1.25), shear=15.0, translation=0.1)
    first = augment_batch(images, SEED, config)
    again = augment_batch(images, SEED, config)
    other = augment_batch(images, tf.constant([5, 6], tf.int64), config)
    assert first.dtype == tf.uint8 and first.shape == images.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, images)


def test_horizontal_flip_config_flips_some_images_exactly_and_keeps_the_others():
    images = random_batch(count=16)
    flipped = augment_batch(images, SEED, AugmentConfig(horizontal_flip=True)).numpy()
    was_flipped = [np.array_equal(out, img[:, ::-1]) for out, img in zip(flipped, images)]
    kept = [np.array_equal(out, img) for out, img in zip(flipped, images)]
    assert all(a != b for a, b in zip(was_flipped, kept))
    assert 0 < sum(was_flipped) < 16


def test_colour_matrices_identity_and_greyscale():
    np.testing.assert_allclose(colour_matrices(tf.ones([1]), tf.zeros([1]))[0], np.eye(3),
                               atol=1e-6)
    np.testing.assert_allclose(colour_matrices(tf.ones([1]), tf.ones([1]))[0], np.eye(3),
                               atol=1e-5)  # a full hue turn
    grey = colour_matrices(tf.zeros([1]), tf.zeros([1]))[0].numpy()
    luma = np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(grey, np.repeat(luma[:, None], 3, axis=1), atol=1e-6)


def test_brightness_adds_one_offset_per_image():
    images = np.full((4, 8, 8, 3), 100, np.uint8)
    images[:, :4] = 120
    out = augment_batch(images, SEED, AugmentConfig(brightness=0.1)).numpy().astype(int)
    offsets = out - images
    assert all(len(np.unique(offset)) == 1 for offset in offsets)
    assert len(np.unique(offsets[:, 0, 0, 0])) == 4 and np.abs(offsets).max() <= 26


def test_gaussian_blur_matches_opencv_with_per_image_sigma():
    images = random_batch(count=2, height=20, width=24).astype(np.float32)
    sigmas = np.array([0.8, 1.5], np.float32)
    blurred = gaussian_blur(tf.constant(images), tf.constant(sigmas), radius=5).numpy()
    for image, sigma, ours in zip(images, sigmas, blurred):
        reference = cv2.GaussianBlur(image, (11, 11), float(sigma),
                                     borderType=cv2.BORDER_REFLECT_101)
        np.testing.assert_allclose(ours, reference, atol=1e-3)


def test_jpeg_recompression_changes_pixels_a_little():
    images = np.repeat(cv2.GaussianBlur(random_batch(count=1, height=32, width=32)[0],
                                        (0, 0), 3)[None], 3, axis=0)
    config = AugmentConfig(jpeg_probability=1.0, jpeg_quality=(50, 60))
    out = augment_batch(images, SEED, config).numpy()
    difference = np.abs(out.astype(int) - images)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert 0 < difference.mean() < 5


def test_paper_preset_runs_every_stage():
    config = AugmentConfig.paper()
    assert config.has_geometry and config.has_colour
    images = random_batch(count=5)
    out = augment_batch(images, SEED, config)
    assert out.dtype == tf.uint8 and out.shape == images.shape


def test_config_rejects_unknown_fill_mode_and_bad_zoom():
    with pytest.raises(ValueError, match="fill_mode"):
        AugmentConfig(fill_mode="mirror")
    with pytest.raises(ValueError, match="zoom"):
        AugmentConfig(zoom=(1.2, 0.8))
