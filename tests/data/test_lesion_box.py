"""Tests of dermnet.data.lesion_box (the mask-free lesion box and its geometry), of the
pipeline's crop to a box, and of the run's cached crop boxes. Synthetic images: a dark
ellipse on skin colour, whose box is known by construction. With DERMNET_HAM10000_IMAGES,
also the estimate against 30 real HAM10000 masks."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from dermnet.config import Config, apply_overrides
from dermnet.data.lesion_box import (
    WHOLE_IMAGE,
    box_from_mask,
    box_iou,
    box_to_pixels,
    estimate_crop_box,
    estimate_lesion_box,
    estimate_lesion_boxes,
    expand_box,
)
from dermnet.data.pipeline import (
    PipelineConfig,
    build_dataset,
    crop_to_box,
    decode_jpeg,
    load_image,
    resize_image,
)

SKIN, LESION = (220, 180, 160), (120, 70, 50)  # RGB: light skin, brown lesion
HEIGHT, WIDTH = 150, 200                       # HAM10000's 4:3 at the shared copy's size
# cv2.ellipse(centre (100, 75), semi-axes (30, 20)) fills columns 70..130 and rows 55..95.
ELLIPSE_BOX = (70 / WIDTH, 55 / HEIGHT, 131 / WIDTH, 96 / HEIGHT)
TOLERANCE = 3  # px: the estimate works at 128x96, 1.6 source pixels per working pixel


def make_lesion_image(vignette_radius=None):
    """uint8 RGB [150, 200, 3]: the ellipse on skin, optionally black outside a circle."""
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = SKIN
    cv2.ellipse(image, (100, 75), (30, 20), 0, 0, 360, LESION, -1)
    if vignette_radius is not None:
        rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
        image[np.hypot(columns - 99.5, rows - 74.5) > vignette_radius] = 0
    return image


def assert_box_near(box, expected, tolerance_px=TOLERANCE):
    scale = np.array([WIDTH, HEIGHT, WIDTH, HEIGHT])
    np.testing.assert_allclose(np.array(box) * scale, np.array(expected) * scale,
                               atol=tolerance_px)


# --- the estimate --------------------------------------------------------------------------


def test_ellipse_box_is_its_mask_box():
    """The hand-computed box is what the drawn ellipse covers (guards the test's premise)."""
    assert box_from_mask(np.all(make_lesion_image() == LESION, axis=-1)) == ELLIPSE_BOX


def test_estimate_recovers_a_dark_ellipse():
    box, found = estimate_lesion_box(make_lesion_image())
    assert found
    assert_box_near(box, ELLIPSE_BOX)


def test_estimate_ignores_black_vignette_corners():
    # A dermoscope's circular field: corners and thin top / bottom bands black, 49% of the
    # image; without the field-of-view step the box grows by up to 6 px.
    image = make_lesion_image(vignette_radius=70)
    assert (image == 0).all(axis=-1).mean() > 0.45
    box, found = estimate_lesion_box(image)
    assert found
    assert_box_near(box, ELLIPSE_BOX)


def test_estimate_survives_sensor_noise():
    noise = np.random.default_rng(0).normal(0, 8, (HEIGHT, WIDTH, 3))
    image = np.clip(make_lesion_image() + noise, 0, 255).astype(np.uint8)
    box, found = estimate_lesion_box(image)
    assert found
    assert_box_near(box, ELLIPSE_BOX)


@pytest.mark.parametrize("image", [
    np.full((HEIGHT, WIDTH, 3), 200, np.uint8),  # blank
    np.full((HEIGHT, WIDTH, 3), SKIN, np.uint8),  # bare skin
    np.clip(np.random.default_rng(1).normal(200, 8, (HEIGHT, WIDTH, 3)), 0, 255)
    .astype(np.uint8),  # skin-free noise
], ids=["blank", "skin", "noise"])
def test_estimate_falls_back_to_whole_image(image):
    assert estimate_lesion_box(image) == (WHOLE_IMAGE, False)


def test_estimate_lesion_boxes_reads_files_in_order(tmp_path):
    paths = []
    for index, image in enumerate([make_lesion_image(), np.full((HEIGHT, WIDTH, 3), 200,
                                                                np.uint8)]):
        paths.append(tmp_path / f"image_{index}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    boxes, found = estimate_lesion_boxes(paths)
    assert boxes.dtype == np.float32 and boxes.shape == (2, 4)
    assert found.tolist() == [True, False]
    np.testing.assert_array_equal(boxes[0], np.float32(estimate_lesion_box(
        make_lesion_image())[0]))
    np.testing.assert_array_equal(boxes[1], np.float32(WHOLE_IMAGE))
    crops, _ = estimate_lesion_boxes(paths, margin=0.25, aspect=4 / 3)
    np.testing.assert_array_equal(crops[0], np.float32(estimate_crop_box(
        make_lesion_image(), 0.25, 4 / 3)[0]))
    with pytest.raises(ValueError, match="cannot read image"):
        estimate_lesion_boxes([tmp_path / "missing.png"])


# --- geometry, worked out by hand -----------------------------------------------------------


@pytest.mark.parametrize("box, margin, aspect, image_aspect, expected", [
    # 0.2 wide, +0.5 x 0.2 on each side -> 0.4, about the centre 0.5
    ((0.4, 0.4, 0.6, 0.6), 0.5, 1.0, 1.0, (0.3, 0.3, 0.7, 0.7)),
    # square box, input twice as wide as high: width doubles to 0.4
    ((0.4, 0.4, 0.6, 0.6), 0.0, 2.0, 1.0, (0.3, 0.4, 0.7, 0.6)),
    # a 200x100 image: x 90..110 px, y 40..60 px (20x20 px); 4:3 -> 26.67 px wide,
    # 86.67..113.33 px, i.e. 0.43333..0.56667 of the width
    ((0.45, 0.4, 0.55, 0.6), 0.0, 4 / 3, 2.0, (0.4333333, 0.4, 0.5666667, 0.6)),
    # tall box in a 4:3 frame, 4:3 input: 0.1 x 0.4 of a 4x3 image = 0.4 x 1.2 units ->
    # 1.6 units wide = 0.4 of the width, about the centre 0.5
    ((0.45, 0.3, 0.55, 0.7), 0.0, 4 / 3, 4 / 3, (0.3, 0.3, 0.7, 0.7)),
    # at the corner: 0.4 wide about 0.1 -> -0.1..0.3, shifted inside to 0..0.4
    ((0.0, 0.0, 0.2, 0.2), 0.5, 1.0, 1.0, (0.0, 0.0, 0.4, 0.4)),
    # at the far corner likewise: 0.7..1.1 -> 0.6..1.0
    ((0.8, 0.8, 1.0, 1.0), 0.5, 1.0, 1.0, (0.6, 0.6, 1.0, 1.0)),
    # larger than the image: clipped to it, aspect ratio lost
    ((0.1, 0.1, 0.9, 0.9), 0.5, 1.0, 1.0, (0.0, 0.0, 1.0, 1.0)),
    # 4:3 input on a square image, full height: width grows past the image, clipped
    ((0.25, 0.0, 0.75, 1.0), 0.0, 4 / 3, 1.0, (0.0, 0.0, 1.0, 1.0)),
    # the whole image stays the whole image
    (WHOLE_IMAGE, 0.25, 4 / 3, 4 / 3, WHOLE_IMAGE),
])
def test_expand_box(box, margin, aspect, image_aspect, expected):
    np.testing.assert_allclose(expand_box(box, margin, aspect, image_aspect), expected,
                               atol=1e-6)


def test_expand_box_min_size():
    # 0.02 wide about 0.51 -> at least 0.25: 0.385..0.635
    np.testing.assert_allclose(expand_box((0.5, 0.5, 0.52, 0.52), 0.0, 1.0, 1.0, min_size=0.25),
                               (0.385, 0.385, 0.635, 0.635), atol=1e-9)


def test_box_iou_by_hand():
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)  # 1 / (4 + 4 - 1)
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((0, 0, 0.5, 1), (0, 0, 1, 1)) == pytest.approx(0.5)


def test_box_from_mask():
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:7] = True  # rows 2..4, columns 3..6
    assert box_from_mask(mask) == (3 / 20, 2 / 10, 7 / 20, 5 / 10)
    assert box_from_mask(np.zeros((10, 20), bool)) is None


def test_box_to_pixels_rounds_half_up_and_keeps_one_pixel():
    # 0.125 x 60 = 7.5 -> 8 and 0.375 x 60 = 22.5 -> 23 (exact halves round up, not to
    # even); 0.2 x 45 = 9.0000001 -> 9; 0.9 x 45 = 40.4999989 (float32 0.9 is just below) -> 40
    assert box_to_pixels((0.125, 0.2, 0.375, 0.9), 45, 60) == (8, 9, 23, 40)
    assert box_to_pixels((0.5, 0.5, 0.5, 0.5), 10, 10) == (5, 5, 6, 6)  # empty -> one pixel
    assert box_to_pixels((0.99, 0.0, 1.0, 1.0), 10, 10) == (9, 0, 10, 10)


# --- the pipeline's crop ------------------------------------------------------------------


SIZE = (22, 30)  # (H, W) model input of the pipeline tests


@pytest.fixture(scope="module")
def random_image():
    """uint8 RGB [45, 60, 3] of noise: any misplaced pixel shows."""
    return np.random.default_rng(2).integers(0, 256, (45, 60, 3), dtype=np.uint8)


def test_crop_to_box_matches_box_to_pixels(random_image):
    """The TensorFlow crop and the numpy window agree on many boxes, half-pixel edges too."""
    rng = np.random.default_rng(3)
    corners = np.sort(rng.uniform(0, 1, (200, 2, 2)), axis=1)  # [box, (start, stop), (x, y)]
    boxes = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], 1)
    boxes = np.concatenate([boxes, [[0.5 / 60, 0.5 / 45, 30.5 / 60, 22.5 / 45]]])
    for box in boxes.astype(np.float32):
        left, top, right, bottom = box_to_pixels(box, 45, 60)
        np.testing.assert_array_equal(crop_to_box(tf.constant(random_image), box).numpy(),
                                      random_image[top:bottom, left:right])


def test_load_image_crops_a_png_to_its_box_before_the_resize(tmp_path, random_image):
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), cv2.cvtColor(random_image, cv2.COLOR_RGB2BGR))
    box = np.float32([0.125, 0.2, 0.375, 0.9])  # columns 8..22, rows 9..39 (see above)
    expected = resize_image(tf.constant(random_image[9:40, 8:23]), SIZE).numpy()
    np.testing.assert_array_equal(load_image(str(path), SIZE, box=box).numpy(), expected)


def test_jpeg_crop_decodes_at_a_scale_that_covers_the_input(tmp_path):
    """A 45x60 JPEG for a 22x30 input decodes at 1/2 (23x30) whole, but in full when only
    half of each side is kept, and the crop equals OpenCV's full decode, sliced."""
    image = cv2.GaussianBlur(np.random.default_rng(4).integers(0, 256, (45, 60, 3), np.uint8),
                             (0, 0), 2)
    path = tmp_path / "image.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    contents = tf.io.read_file(str(path))
    assert decode_jpeg(contents, SIZE).shape == (23, 30, 3)
    assert decode_jpeg(contents, SIZE, tf.constant([0.5, 0.5], tf.float64)).shape == (45, 60, 3)
    box = np.float32([0.25, 0.25, 0.75, 0.75])
    left, top, right, bottom = box_to_pixels(box, 45, 60)  # 15..45, 11..34 (30x23)
    full = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    expected = resize_image(tf.constant(full[top:bottom, left:right]), SIZE).numpy()
    np.testing.assert_array_equal(load_image(str(path), SIZE, box=box).numpy(), expected)


def write_pngs(folder, count):
    rng = np.random.default_rng(5)
    paths = []
    for index in range(count):
        paths.append(str(folder / f"image_{index}.png"))
        cv2.imwrite(paths[-1], rng.integers(0, 256, (45, 60, 3), dtype=np.uint8))
    return paths


def test_build_dataset_crops_each_row_to_its_box(tmp_path):
    paths = write_pngs(tmp_path, 3)
    boxes = np.float32([[0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], [0.5, 0.5, 1, 1]])
    config = PipelineConfig(image_size=SIZE, batch_size=3, cache="none")
    (inputs, _), = build_dataset(paths, [0, 1, 2], config=config, training=False, boxes=boxes)
    for row, (path, box) in enumerate(zip(paths, boxes)):
        np.testing.assert_array_equal(inputs["image"][row], load_image(path, SIZE, box=box))
    (whole, _), = build_dataset(paths, [0, 1, 2], config=config, training=False)
    np.testing.assert_array_equal(inputs["image"][0], whole["image"][0])  # (0,0,1,1) = none


def test_file_cache_is_never_read_back_for_other_boxes(tmp_path):
    paths = write_pngs(tmp_path, 2)
    config = PipelineConfig(image_size=SIZE, batch_size=2, cache=str(tmp_path / "cache/c"))

    def images(boxes):
        (inputs, _), = build_dataset(paths, [0, 1], config=config, training=False, boxes=boxes)
        return inputs["image"].numpy()

    first = images(np.float32([[0, 0, 0.5, 0.5]] * 2))
    second = images(np.float32([[0.5, 0.5, 1, 1]] * 2))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second[0], load_image(paths[0], SIZE, box=[0.5, 0.5, 1, 1]))
    assert len({name.name.split(".")[0] for name in (tmp_path / "cache").iterdir()}) == 2


def test_prediction_reads_the_crops_that_training_fed(tmp_path):
    """predict.read_images with boxes = the pipeline's batches with the same boxes."""
    from dermnet.inference.predict import decode_image_file, read_images

    paths = write_pngs(tmp_path, 3)
    boxes = np.float32([[0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], [0.5, 0.25, 1, 1]])
    config = PipelineConfig(image_size=SIZE, batch_size=3, cache="none")
    (inputs, _), = build_dataset(paths, [0, 1, 2], config=config, training=False, boxes=boxes)
    np.testing.assert_array_equal(read_images(paths, SIZE, boxes=boxes), inputs["image"])
    full = decode_image_file(Path(paths[2]))  # 45x60 at its own size: rows 11..44, cols 30..59
    np.testing.assert_array_equal(decode_image_file(Path(paths[2]), box=boxes[2]),
                                  full[11:45, 30:60])


@pytest.mark.parametrize("boxes, message", [
    (np.zeros((3, 4), np.float32), "must be \\[2, 4\\]"),
    (np.float32([[0, 0, 1, 1], [0.5, 0, 0.4, 1]]), "x0 < x1"),
    (np.float32([[0, 0, 1, 1.5], [0, 0, 1, 1]]), "within \\[0, 1\\]"),
])
def test_build_dataset_rejects_bad_boxes(tmp_path, boxes, message):
    config = PipelineConfig(image_size=SIZE, batch_size=2, cache="none")
    with pytest.raises(ValueError, match=message):
        build_dataset(["a.png", "b.png"], [0, 1], config=config, training=False, boxes=boxes)


# --- the run's crop boxes -------------------------------------------------------------------


def test_run_crop_boxes_are_cached_and_reused(tmp_path):
    from dermnet.runs.datasets import LESION_BOXES, make_lesion_boxes

    images = tmp_path / "images"
    images.mkdir()
    frame = pd.DataFrame({"image_id": ["ISIC_1", "ISIC_2", "ISIC_1"]})  # a repeated row
    frame["path"] = [str(images / f"{image_id}.png") for image_id in frame["image_id"]]
    cv2.imwrite(frame["path"][0], cv2.cvtColor(make_lesion_image(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(frame["path"][1], np.full((HEIGHT, WIDTH, 3), 200, np.uint8))
    config = apply_overrides(Config(), ["data.lesion_crop=0.25", "data.image_size=[112, 150]"])
    assert make_lesion_boxes(frame, Config(), tmp_path) is None  # off by default
    boxes = make_lesion_boxes(frame, config, tmp_path)
    crop = np.float32(estimate_crop_box(make_lesion_image(), 0.25, 150 / 112)[0])
    np.testing.assert_array_equal(boxes, np.stack([crop, np.float32(WHOLE_IMAGE), crop]))
    table = pd.read_csv(tmp_path / LESION_BOXES)
    assert table.columns.tolist() == ["image_id", "x0", "y0", "x1", "y1", "found"]
    assert table["found"].tolist() == [True, False]
    for path in images.iterdir():
        path.unlink()  # a resumed run must not need to estimate again
    np.testing.assert_array_equal(make_lesion_boxes(frame, config, tmp_path), boxes)


# --- real masks -----------------------------------------------------------------------------


# bench/lesion_box.py on all 10,015 HAM10000 images: mean IoU 0.79 (bcc, the hardest class,
# 0.65), 8% of images below 0.5, so 30 images evenly spread have a mean well above 0.65
# (standard error about 0.04); a margin-0.25 crop keeps 99.8% of the mask on average.
REAL_IOU_FLOOR = 0.65
REAL_COVERED_FLOOR = 0.97



def test_estimate_matches_real_masks(real_dataset):
    metadata = pd.read_csv(real_dataset / "HAM10000_metadata.csv")
    ious, covered = [], []
    for image_id in metadata["image_id"].iloc[np.linspace(0, len(metadata) - 1, 30).astype(int)]:
        mask = cv2.imread(str(real_dataset / "masks" / f"{image_id}_segmentation.png"), 0) > 127
        image = cv2.cvtColor(cv2.imread(str(real_dataset / "images" / f"{image_id}.jpg")),
                             cv2.COLOR_BGR2RGB)
        box, _ = estimate_lesion_box(image)
        ious.append(box_iou(box, box_from_mask(mask)))
        left, top, right, bottom = box_to_pixels(estimate_crop_box(image, 0.25, 4 / 3)[0],
                                                 *mask.shape)
        covered.append(mask[top:bottom, left:right].sum() / mask.sum())
    assert np.mean(ious) > REAL_IOU_FLOOR
    assert np.mean(covered) > REAL_COVERED_FLOOR
