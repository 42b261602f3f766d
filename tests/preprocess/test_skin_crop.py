"""Tests of preprocess.skin_crop: crops of synthetic photos with a known skin box (containment,
background removed, red hue wrap, ignored grey and dark pixels), the exact circular k-means
against brute force, the threshold bounds, real photographs, determinism, and the comparison
with the original study's method."""

import cv2
import numpy as np
import pytest
from skimage import data
from threadpoolctl import threadpool_limits

from preprocess import skin_crop
from preprocess.skin_crop import CropConfig, crop_image, crop_original, find_skin_box

SLACK = 4  # px: the analysed copy is half size, and JPEG blurs colour edges
SEEDS = range(8)  # even seeds: blue cloth, odd: grey wall; all with dark clothes and a bracelet


def area(box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def intersection(first, second) -> int:
    return area((max(first[0], second[0]), max(first[1], second[1]),
                 min(first[2], second[2]), min(first[3], second[3])))


def iou(first, second) -> float:
    overlap = intersection(first, second)
    return overlap / (area(first) + area(second) - overlap)


def contains(box, truth, slack=SLACK) -> bool:
    return (box[0] <= truth[0] + slack and box[1] <= truth[1] + slack
            and box[2] >= truth[2] - slack and box[3] >= truth[3] - slack)


def background_removed(box, truth, shape) -> float:
    background = shape[0] * shape[1] - area(truth)
    return 1 - (area(box) - intersection(box, truth)) / background


@pytest.mark.parametrize("seed", SEEDS)
def test_crop_contains_the_skin_and_cuts_most_background(seed):
    image, truth = skin_crop.make_synthetic_photo(seed)
    result = find_skin_box(image)
    assert result.status == "ok"
    assert contains(result.box, truth), (result.box, truth)
    assert background_removed(result.box, truth, image.shape[:2]) > 0.7
    assert crop_image(image, result.box).shape[:2] == (result.box[3] - result.box[1],
                                                       result.box[2] - result.box[0])


def test_red_skin_across_the_hue_wrap_is_one_cluster():
    image, truth = skin_crop.make_synthetic_photo(3, skin_hue=0.0, background="cloth")
    config = CropConfig()
    hue, mask = skin_crop.compute_hue_and_mask(skin_crop.make_analysis_copy(image, 300), config)
    chromatic = mask > 0
    inside = np.zeros(hue.shape, bool)
    x0, y0, x1, y1 = (value // 2 + 3 * sign for value, sign in zip(truth, (1, 1, -1, -1)))
    inside[y0:y1, x0:x1] = True
    skin_hues = hue[inside & chromatic]
    assert (skin_hues > 90).mean() > 0.2 and (skin_hues < 90).mean() > 0.2  # both sides of 0

    # A linear k-means on the hue values splits the skin into "near 179" and "near 0" ...
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 0.01)
    _, labels, _ = cv2.kmeans(hue[chromatic].astype(np.float32).reshape(-1, 1), 2, None,
                              criteria, 5, cv2.KMEANS_PP_CENTERS)
    naive = np.full(hue.shape, -1)
    naive[chromatic] = labels[:, 0]
    naive_skin = naive[inside & chromatic]
    assert max(naive_skin.mean(), 1 - naive_skin.mean()) < 0.8
    # ... the circular one keeps it whole, and the crop holds the whole rectangle.
    clusters = skin_crop.compute_hue_clusters(skin_crop.compute_hue_histogram(hue, mask))
    ours = clusters.bin_labels[skin_hues]
    assert max(ours.mean(), 1 - ours.mean()) > 0.99
    result = find_skin_box(image)
    assert contains(result.box, truth)
    assert background_removed(result.box, truth, image.shape[:2]) > 0.7


def test_grey_wall_and_dark_clothes_are_left_out():
    image, truth = skin_crop.make_synthetic_photo(1, background="wall")
    config = CropConfig()
    small = skin_crop.make_analysis_copy(image, config.analysis_size)
    chromatic = skin_crop.compute_hue_and_mask(small, config)[1] > 0
    outside = np.ones(chromatic.shape, bool)
    x0, y0, x1, y1 = (value // 2 + 8 * sign for value, sign in zip(truth, (-1, -1, 1, 1)))
    outside[max(y0, 0):y1, max(x0, 0):x1] = False
    assert chromatic[outside].mean() < 0.01  # the wall's and the clothes' hues are ignored
    result = find_skin_box(image)
    assert contains(result.box, truth)
    assert background_removed(result.box, truth, image.shape[:2]) > 0.7
    # The skin fraction counts skin only: about the rectangle's share of the image.
    assert result.skin_fraction == pytest.approx(area(truth) / area((0, 0, 600, 450)), abs=0.05)


def test_colourless_and_skinless_photos_are_not_cropped():
    grey = np.full((120, 160, 3), 128, np.uint8)
    blue_green = np.zeros((120, 160, 3), np.uint8)
    blue_green[:, :80] = (200, 60, 30)
    blue_green[:, 80:] = (60, 180, 40)
    for image in (grey, blue_green):
        result = find_skin_box(image)
        assert result.status == "no_skin" and result.box == (0, 0, 160, 120)


def test_a_red_lesion_at_the_edge_of_a_skin_close_up_is_kept():
    # Skin (hue 10) with a large plaque (hue 176) filling the left third: both clusters are
    # skin-like, so nothing is cut; choosing the one closest cluster would cut the plaque.
    hsv = np.full((300, 400, 3), (10, 110, 190), np.uint8)
    hsv[:, :130] = (176, 170, 150)
    result = find_skin_box(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))
    assert result.box == (0, 0, 400, 300)
    assert result.skin_fraction > 0.99


def test_hue_clusters_are_the_exact_optimum():
    rng = np.random.default_rng(5)
    for _ in range(3):
        bins = np.arange(180)
        histogram = np.zeros(180)
        for centre in rng.integers(0, 180, 3):
            distance = (bins - centre + 90) % 180 - 90
            histogram += rng.uniform(50, 1000) * np.exp(-0.5 * (distance / rng.uniform(2, 12)) ** 2)
        histogram = np.floor(histogram)
        clusters = skin_crop.compute_hue_clusters(histogram)
        best, ours = brute_force_costs(histogram, clusters.bin_labels)
        assert ours == pytest.approx(best, rel=1e-9)
        assert clusters.weights.sum() == histogram.sum()


def brute_force_costs(histogram, labels):
    """(lowest within-cluster sum of squares over every split of the circle into two arcs,
    that of `labels`), computed directly from positions along each arc."""
    best = np.inf
    lengths = np.arange(1, 180)[:, None]
    for start in range(180):
        position = (np.arange(180) - start) % 180  # along the circle from `start`
        first = position[None, :] < lengths
        costs = arc_squares(histogram, position, first) + arc_squares(histogram, position, ~first)
        best = min(best, float(costs.min()))
    start = int(np.flatnonzero(labels != np.roll(labels, 1))[0])  # where an arc begins
    position = (np.arange(180) - start) % 180
    first = (labels == labels[start])[None, :]
    ours = arc_squares(histogram, position, first) + arc_squares(histogram, position, ~first)
    return best, float(ours[0])


def arc_squares(histogram, position, member):
    """Weighted sum of squares about the mean position of the `member` bins (one row each);
    positions run along the circle from the split, so an arc never straddles their wrap."""
    weights = histogram[None, :] * member
    count = np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    mean = (weights * position).sum(axis=1, keepdims=True) / count
    return (weights * (position - mean) ** 2).sum(axis=1)


def test_threshold_is_half_the_skin_fraction_within_the_papers_bounds():
    config = CropConfig()
    assert skin_crop.compute_threshold(0.05, config) == 0.1
    assert skin_crop.compute_threshold(0.4, config) == pytest.approx(0.2)
    assert skin_crop.compute_threshold(0.9, config) == 0.3


def test_the_astronauts_face_is_kept():
    image = data.astronaut()[:, :, ::-1].copy()  # RGB -> BGR
    face = (175, 70, 280, 178)  # (x0, y0, x1, y1): forehead to chin, cheek to cheek
    result = find_skin_box(image)
    assert result.status == "ok" and contains(result.box, face, slack=0)
    assert area(result.box) < 0.9 * area((0, 0, 512, 512))  # the grey wall and shuttle go


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea"])
def test_other_photos_give_a_valid_box(name):
    image = getattr(data, name)()[:, :, ::-1].copy()
    result = find_skin_box(image)
    x0, y0, x1, y1 = result.box
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    assert result.status in skin_crop.STATUSES


def test_large_photos_are_analysed_at_the_same_size():
    image, truth = skin_crop.make_synthetic_photo(2)
    large = cv2.resize(image, (2400, 1800), interpolation=cv2.INTER_NEAREST)
    small_box = find_skin_box(image).box
    large_box = find_skin_box(large).box
    assert np.abs(np.array(large_box) - 4 * np.array(small_box)).max() <= 8
    assert contains(large_box, tuple(4 * value for value in truth), slack=4 * SLACK)


def test_same_result_twice():
    image, _ = skin_crop.make_synthetic_photo(6)
    assert find_skin_box(image) == find_skin_box(image.copy())


def test_rejects_what_is_not_an_8_bit_bgr_image():
    with pytest.raises(ValueError, match="8-bit BGR"):
        find_skin_box(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="8-bit BGR"):
        find_skin_box(np.zeros((10, 10, 3), np.float32))


@pytest.mark.parametrize("options", [{}, {"background": "cloth", "clothes": False}],
                         ids=["standard", "plain_cloth"])
def test_at_least_as_good_as_the_original_method(options):
    photos = [skin_crop.make_synthetic_photo(seed, **options) for seed in range(6)]
    with threadpool_limits(limits=1):  # MiniBatchKMeans is slow when it oversubscribes
        original = [iou(crop_original(image), truth) for image, truth in photos]
    ours = [iou(find_skin_box(image).box, truth) for image, truth in photos]
    assert np.mean(ours) >= np.mean(original)
    assert min(ours) > 0.85


def test_original_method_finds_a_clean_rectangle_and_is_seeded():
    image = np.zeros((450, 600, 3), np.uint8)
    image[:] = (200, 80, 40)  # blue cloth
    image[100:300, 150:400] = (120, 160, 220)  # skin
    with threadpool_limits(limits=1):
        box = crop_original(image)
        assert box == crop_original(image)
    assert iou(box, (150, 100, 400, 300)) > 0.9
