"""Grad-CAM on a hand-built model whose class scores depend on known image regions: the
heatmap must peak where the evidence for the class is, in original-image coordinates."""

import cv2
import keras
import numpy as np
import pytest

from dermnet.inference.gradcam import (
    CAPTION_HEIGHT,
    find_feature_map_layer,
    make_gradcam,
    make_overlay,
    render_gradcam_figure,
    save_gradcam,
    save_png,
)
from dermnet.inference.predict import read_images
from dermnet.models import load_model

INPUT_SIZE = (48, 64)  # (H, W) of the hand-built model
ORIGINAL = (120, 300)  # (H, W) of the test image: another aspect ratio, so a swapped or
#                        unstretched axis puts the peak in the wrong place
SQUARE = (slice(30, 70), slice(200, 260))  # the bright region, original coordinates
BRIGHT, DARK = 255, 25


def build_square_detector(pool_inside_backbone: bool) -> keras.Model:
    """image -> nested backbone (a 4x4 stride-4 conv: channel 0 fires on bright patches,
    channel 1 on dark ones) -> average pooling -> Dense: class 0 "bright", class 1 "dark".

    Logits are 60 x the mean of each channel, so the softmax saturates (p = 1.0 in float32):
    Grad-CAM from probabilities instead of logits would find no gradient for class 1."""
    patches = keras.Input((*INPUT_SIZE, 3))
    detector = keras.layers.Conv2D(2, 4, strides=4, activation="relu", name="detector")
    features = detector(patches)  # [12, 16, 2]
    if pool_inside_backbone:
        features = keras.layers.GlobalAveragePooling2D()(features)
    backbone = keras.Model(patches, features, name="backbone")
    image = keras.Input((*INPUT_SIZE, 3), name="image")
    features = backbone(keras.layers.Rescaling(1 / 255, name="preprocessing")(image))
    if not pool_inside_backbone:
        features = keras.layers.GlobalAveragePooling2D(name="pooling")(features)
    head = keras.layers.Dense(2, activation="softmax", name="probabilities")
    model = keras.Model({"image": image}, head(features))
    kernel = np.ones((4, 4, 3, 2), np.float32) / 48.0  # mean brightness of the patch
    kernel[..., 1] *= -1.0
    detector.set_weights([kernel, np.array([-0.5, 0.5], np.float32)])
    head.set_weights([np.eye(2, dtype=np.float32) * 60.0, np.zeros(2, np.float32)])
    return model


@pytest.fixture(scope="module")
def square_image(tmp_path_factory):
    image = np.full((*ORIGINAL, 3), DARK, np.uint8)
    image[SQUARE] = BRIGHT
    path = tmp_path_factory.mktemp("square") / "square.png"
    cv2.imwrite(str(path), image)
    return path


def upsampled(heatmap):
    return cv2.resize(heatmap, ORIGINAL[::-1], interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("pool_inside_backbone", [False, True])
def test_heatmap_peaks_where_the_class_evidence_is(square_image, pool_inside_backbone):
    model = build_square_detector(pool_inside_backbone)
    inputs = {"image": read_images([square_image], INPUT_SIZE)}
    assert model.predict(inputs, verbose=0)[0, 1] == 1.0  # saturated, see the builder
    gradcam = make_gradcam(model)
    bright, dark = gradcam.compute(inputs, [0])[0], gradcam.compute(inputs, [1])[0]
    assert bright.shape == dark.shape == (12, 16)
    both = gradcam.compute({"image": np.repeat(inputs["image"], 2, axis=0)}, [0, 1])
    np.testing.assert_allclose(both, [bright, dark], atol=1e-6)  # one class per image
    assert bright.min() >= 0.0 and bright.max() == pytest.approx(1.0)
    bright, dark = upsampled(bright), upsampled(dark)
    inside = np.zeros(ORIGINAL, bool)
    inside[SQUARE] = True
    row, column = np.unravel_index(np.argmax(bright), ORIGINAL)
    assert inside[row, column], (row, column)
    assert bright[inside].mean() > 0.5 > 0.1 > bright[~inside].mean()
    assert dark[~inside].mean() > dark[inside].mean() + 0.5


def test_feature_map_is_the_last_4d_layer_of_the_backbone(image_run):
    model = load_model(image_run / "model.keras")
    assert find_feature_map_layer(model.get_layer("mobilenet_1.00_32")).name == \
        "conv_pw_13_relu"
    assert find_feature_map_layer(build_square_detector(True).get_layer("backbone")).name == \
        "detector"


def test_overlay_blends_the_jet_colormap_at_40_percent():
    image = np.full((5, 7, 3), (200, 100, 50), np.uint8)
    heatmap = np.zeros((2, 2), np.float32)
    heatmap[0, 0] = 1.0
    overlay = make_overlay(image, heatmap)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    # JET maps 0 to dark blue (0, 0, 128) and 1 to dark red (128, 0, 0), in RGB.
    np.testing.assert_allclose(overlay[-1, -1], 0.6 * np.array([200, 100, 50]) + [0, 0, 51.2],
                               atol=1)
    np.testing.assert_allclose(overlay[0, 0], 0.6 * np.array([200, 100, 50]) + [51.2, 0, 0],
                               atol=1)


def test_saved_overlay_has_the_original_size_and_marks_the_square(square_image, tmp_path):
    model = build_square_detector(False)
    target = tmp_path / "out" / "square_gradcam.png"
    empty = save_gradcam(make_gradcam(model), square_image,
                         {"image": read_images([square_image], INPUT_SIZE)}, 0, target,
                         "Grad-CAM for square (99.0%)")
    assert empty is False
    written = cv2.imread(str(target))[..., ::-1]
    top = CAPTION_HEIGHT  # the overlay sits under the caption strip, at the image's size
    assert written.shape == (top + ORIGINAL[0], max(ORIGINAL[1] + 68, 420), 3)
    np.testing.assert_allclose(written[top + 50, 230], 0.6 * BRIGHT + np.array([51.2, 0, 0]),
                               atol=2)
    np.testing.assert_allclose(written[top + 110, 10], 0.6 * DARK + np.array([0, 0, 51.2]),
                               atol=2)
    # The colour bar: JET's dark red at the top ("high"), dark blue at the bottom ("low").
    bar = ORIGINAL[1] + 8 + 7
    np.testing.assert_allclose(written[top, bar], [128, 0, 0], atol=3)
    np.testing.assert_allclose(written[-1, bar], [0, 0, 128], atol=3)
    assert (written[:top, :ORIGINAL[1]] < 128).any()  # the caption is written
    assert sorted(path.name for path in target.parent.iterdir()) == [target.name]


def test_an_empty_map_is_said_not_drawn_as_a_flat_tint():
    # The outside trial: an empty Grad-CAM came out as a uniform blue tint over the image.
    image = np.full((60, 80, 3), 90, np.uint8)
    figure = render_gradcam_figure(image, np.zeros((3, 4), np.float32), "Grad-CAM for df")
    np.testing.assert_array_equal(figure[CAPTION_HEIGHT:, :80], image)  # the plain image
    caption = figure[:CAPTION_HEIGHT]
    assert ((caption[..., 0] > 150) & (caption[..., 1] < 80)).any()  # stated in red


def test_a_large_photo_makes_a_small_figure(tmp_path):
    # The outside trial: a 2.2 MB PNG per image. A 4000x3000 phone photo now gives 640x480.
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8), (0, 0), 3)
    heatmap = rng.random((7, 7)).astype(np.float32)
    figure = render_gradcam_figure(photo, heatmap, "Grad-CAM for mel (81.3%)")
    assert figure.shape == (CAPTION_HEIGHT + 480, 640 + 68, 3)
    save_png(tmp_path / "figure.png", figure)
    assert (tmp_path / "figure.png").stat().st_size < 1_000_000
