"""Shades of Gray colour constancy (dermnet.models.colour), against a NumPy reference."""

import numpy as np
import pytest

from dermnet.models import load_model
from dermnet.models.classifier import build_classifier
from dermnet.models.colour import ShadesOfGray


def shades_of_gray_reference(image: np.ndarray, power: float = 6.0) -> np.ndarray:
    """The colour-constancy function of the winning ISIC 2019 entry (Gessert et al.),
    written out in float64: illuminant = p-norm mean per channel, unit length, gains
    1 / (sqrt(3) e), clipped to 0-255."""
    pixels = image.astype(np.float64)
    illuminant = np.power(np.mean(np.power(pixels, power), axis=(0, 1)), 1.0 / power)
    illuminant = illuminant / np.sqrt(np.sum(illuminant ** 2))
    return np.clip(pixels / (illuminant * np.sqrt(3.0)), 0, 255)


def test_matches_the_reference_on_random_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 20, 30, 3)).astype(np.uint8)
    images[1] = (images[1] * np.array([1.0, 0.7, 0.4])).astype(np.uint8)  # a strong cast
    got = np.asarray(ShadesOfGray()(images))
    expected = np.stack([shades_of_gray_reference(image) for image in images])
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_a_uniformly_tinted_image_becomes_grey():
    tinted = np.broadcast_to(np.array([200.0, 120.0, 60.0]), (1, 8, 8, 3))
    balanced = np.asarray(ShadesOfGray()(tinted))
    # Every channel becomes the quadratic mean of the three: (200, 120, 60) -> 139.9 each.
    np.testing.assert_allclose(balanced, np.sqrt((200**2 + 120**2 + 60**2) / 3), rtol=1e-5)


def test_a_grey_image_is_unchanged_and_black_stays_finite():
    grey = np.full((1, 6, 6, 3), 97.0)
    np.testing.assert_allclose(np.asarray(ShadesOfGray()(grey)), grey, rtol=1e-5)
    black = np.asarray(ShadesOfGray()(np.zeros((1, 6, 6, 3))))
    assert np.isfinite(black).all() and (black == 0).all()


def test_power_below_one_is_refused():
    with pytest.raises(ValueError, match="power must be at least 1"):
        ShadesOfGray(power=0.5)


def test_classifier_with_colour_constancy_saves_and_reloads(tmp_path):
    model = build_classifier("resnet18-half", (48, 64), colour_constancy="shades_of_gray")
    assert model.get_layer("colour_constancy").power == 6.0
    images = np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3)).astype(np.uint8)
    model.save(tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.predict({"image": images}, verbose=0),
                               model.predict({"image": images}, verbose=0), atol=1e-6)


def test_a_colour_cast_is_removed_up_to_brightness():
    """Channel gains g change the output only by one brightness factor (Shades of Gray
    normalises chromaticity, not brightness); with that factor undone, a whole classifier
    gives the same output for an image and the image under another illuminant."""
    image = np.random.default_rng(2).uniform(40, 200, (1, 48, 64, 3))
    cast = image * np.array([1.1, 0.9, 0.75])  # no clipping: values stay below 255
    layer = ShadesOfGray()
    balanced, cast_balanced = np.asarray(layer(image)), np.asarray(layer(cast))
    ratio = cast_balanced / balanced
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-4)
    model = build_classifier("resnet18-half", (48, 64), colour_constancy="shades_of_gray")
    np.testing.assert_allclose(model.predict({"image": cast / ratio.flat[0]}, verbose=0),
                               model.predict({"image": image}, verbose=0), atol=1e-4)


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="colour_constancy must be 'none' or 'shades_of_gray'"):
        build_classifier("resnet18-half", (48, 64), colour_constancy="grey_world")
