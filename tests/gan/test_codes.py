"""GAN inputs: random code batches (deterministic, well-formed) and the square rule for
HAM10000's 450x600 images, with the area downscale to [-1, 1]."""

import numpy as np
import pytest

from gan.codes import make_code_batch, make_one_hot, prepare_real_images, square_crop_or_pad
from gan.config import NetworkConfig

CONFIG = NetworkConfig(final_resolution=16, latent_size=8, continuous_codes=3, clinical_codes=2)


def numbered_image(height, width):
    """Every pixel distinct: value = 1000 * row + column, three equal channels."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.repeat((1000 * rows + columns)[..., None], 3, axis=-1)


def test_code_batches_repeat_for_a_seed_and_differ_across_seeds():
    first, again, other = (make_code_batch(seed, 6, CONFIG) for seed in (7, 7, 8))
    assert first.keys() == {"noise", "categorical", "continuous"}
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name]), name


def test_code_batches_have_the_documented_distributions():
    codes = make_code_batch(0, 7000, CONFIG)
    assert {name: (value.shape, value.dtype) for name, value in codes.items()} == {
        "noise": ((7000, 8), np.float32), "categorical": ((7000, 7), np.float32),
        "continuous": ((7000, 3), np.float32)}
    assert abs(codes["noise"].mean()) < 0.03 and abs(codes["noise"].std() - 1) < 0.03
    np.testing.assert_array_equal(codes["categorical"].sum(axis=1), 1.0)
    assert np.all(np.abs(codes["categorical"].sum(axis=0) / 1000 - 1) < 0.15)  # uniform
    assert codes["continuous"].min() >= -1 and codes["continuous"].max() < 1
    assert abs(codes["continuous"].std() - 1 / np.sqrt(3)) < 0.01  # U(-1, 1)


def test_a_shared_generator_advances_between_batches():
    rng = np.random.default_rng(0)
    first, second = make_code_batch(rng, 3, CONFIG), make_code_batch(rng, 3, CONFIG)
    assert not np.array_equal(first["noise"], second["noise"])


def test_given_classes_and_clinical_rows_are_used():
    clinical = np.arange(8, dtype=np.float32).reshape(4, 2)
    codes = make_code_batch(0, 4, CONFIG, classes=[6, 0, 3, 3], clinical=clinical)
    np.testing.assert_array_equal(codes["categorical"].argmax(axis=1), [6, 0, 3, 3])
    np.testing.assert_array_equal(codes["clinical"], clinical)
    single = make_code_batch(0, 4, CONFIG, classes=2)["categorical"]
    np.testing.assert_array_equal(single, make_one_hot([2, 2, 2, 2], 7))


@pytest.mark.parametrize("arguments, message", [
    ({"classes": [0, 7, 1, 1]}, r"\[0, 7\)"),
    ({"clinical": np.zeros((4, 3))}, r"shape \(4, 2\)"),
])
def test_bad_classes_or_clinical_rows_are_rejected(arguments, message):
    with pytest.raises(ValueError, match=message):
        make_code_batch(0, 4, CONFIG, **arguments)


def test_crop_keeps_the_centred_450_square_of_a_ham10000_image():
    image = numbered_image(450, 600)
    square = square_crop_or_pad(image)
    assert square.shape == (450, 450, 3)
    np.testing.assert_array_equal(square, image[:, 75:525])
    np.testing.assert_array_equal(square_crop_or_pad(image.transpose(1, 0, 2)),
                                  image.transpose(1, 0, 2)[75:525])


def test_pad_mirrors_rows_around_the_whole_image():
    image = numbered_image(450, 600)
    square = square_crop_or_pad(image, mode="pad")
    assert square.shape == (600, 600, 3)
    np.testing.assert_array_equal(square[75:525], image)
    np.testing.assert_array_equal(square[74], image[1])  # reflect: the edge row not repeated
    np.testing.assert_array_equal(square[0], image[75])
    np.testing.assert_array_equal(square[599], image[448 - 74])


def test_odd_differences_and_squares():
    image = numbered_image(5, 8)
    np.testing.assert_array_equal(square_crop_or_pad(image), image[:, 1:6])
    assert square_crop_or_pad(image, mode="pad").shape == (8, 8, 3)
    np.testing.assert_array_equal(square_crop_or_pad(image[:, :5], mode="pad"), image[:, :5])
    with pytest.raises(ValueError, match="mode"):
        square_crop_or_pad(image, mode="stretch")


def test_prepared_images_are_box_averages_scaled_to_plus_minus_one():
    image = np.kron(np.array([[0, 255], [100, 20]]), np.ones((2, 2)))  # [4, 4], 2x2 blocks
    image[0:2, 0:2] = [[2, 0], [0, 2]]  # a block whose mean, 1, is none of its pixels
    image = np.repeat(image.astype(np.uint8)[..., None], 3, axis=-1)  # [4, 4, 3]
    prepared = prepare_real_images(np.stack([image, image]), 2)
    assert prepared.shape == (2, 2, 2, 3) and prepared.dtype == np.float32
    expected = np.array([[1, 255], [100, 20]], np.float32) / 127.5 - 1
    np.testing.assert_allclose(prepared[1, ..., 0], expected, atol=1e-6)


def test_a_ham10000_image_becomes_one_square_at_any_resolution():
    image = np.full((450, 600, 3), 255, np.uint8)
    image[:, :75] = 0  # cropped away by the centre square
    for resolution in (4, 512):  # shrink, and enlarge the 450 crop
        prepared = prepare_real_images(image, resolution)
        assert prepared.shape == (resolution, resolution, 3)
        np.testing.assert_array_equal(prepared, 1.0)
