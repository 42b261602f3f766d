"""Skin cropping of clinical photographs: k-means (K=2) on pixel hue, then a row/column scan.

This module owns the crop of one image: `CropConfig`, `find_skin_box` (image -> `CropResult`),
`crop_image`; `crop_original`, a re-implementation of the original study's code kept for the
benchmark and the quality comparison; and `make_synthetic_photo`, photos with a known skin box
for the tests and the benchmark. `preprocess.crop_cli.crop_folder` crops a folder. OpenCV and
numpy only (scikit-learn for `crop_original`); deterministic.

The method (all on a copy whose longest side is `analysis_size`):
1. Hue in OpenCV units (0-179, two degrees a bin). Pixels with low saturation (greys, white
   walls, highlights) or a low value (dark clothes, shadows) carry no usable hue and are left
   out of the clustering and never count as skin.
2. K=2 k-means on those hues, solved exactly on the 180-bin histogram: on a circle two
   clusters are two arcs, and every pair of cut points is scored with prefix sums. Treating hue
   as a circle matters because red wraps at 179 -> 0 exactly where skin and lesions sit; a
   linear k-means splits a reddish face into "hue 178" and "hue 2".
3. A cluster is skin when its (circular) centre lies in the skin arc `skin_hues` (red-orange,
   -20 to 44 degrees). Both can be (skin and a red lesion, or a close-up of skin only): then all
   chromatic pixels are skin. Neither: status "no_skin" and the box is the whole image.
4. The paper's "image-dependent ratio bounded to [0.1, 0.3]" is the threshold of the scan:
   threshold = clip(ratio_scale * skin_fraction, 0.1, 0.3), where skin_fraction is the skin
   share of the whole image. A row (column) is skin-bearing when its skin share exceeds the
   threshold; the box runs from the first to the last skin-bearing row and column. A line
   through a skin rectangle covering a fraction f of the image is at least f skin (its width
   and height fractions are both >= f), so half of f keeps every such line with a margin for
   lesions and irregular outlines. The lower bound stops stray skin-hued pixels (wood, a
   bracelet) from keeping a background line (under-cropping); the upper bound stops a line
   that is partly skin from being cut in a mostly-skin photo (over-cropping). When no line
   passes (a little skin spread thinly), that axis is not cropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

HUE_BINS = 180  # OpenCV 8-bit hue: 2 degrees a bin; red wraps at 179 -> 0
STATUSES = ("ok", "no_skin")


@dataclass(frozen=True)
class CropConfig:
    analysis_size: int = 300  # longest side analysed: 600x450 -> 300x225, box within 2 px
    min_saturation: int = 30  # 0-255; below this the hue is unreliable (greys, white, glare)
    min_value: int = 40  # 0-255; below this sensor noise decides the hue (dark clothes)
    skin_hues: tuple[int, int] = (170, 22)  # arc [start, end) of skin-like cluster centres,
    # in OpenCV units across the wrap: -20..44 degrees, red-orange; gold (~48 deg) is outside
    ratio_scale: float = 0.5  # threshold = ratio_scale * skin fraction, before the bounds
    ratio_bounds: tuple[float, float] = (0.1, 0.3)  # the paper's bounds on that ratio
    min_chromatic_fraction: float = 0.01  # fewer pixels with a usable hue -> no_skin


@dataclass(frozen=True)
class CropResult:
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels of the input, x1/y1 exclusive
    skin_fraction: float  # skin pixels / all pixels of the analysed copy
    threshold: float  # skin share a row or column needs to stay inside the box
    status: str  # "ok" or "no_skin" (box = whole image)


@dataclass(frozen=True)
class HueClusters:
    bin_labels: np.ndarray  # (180,) int: cluster 0 or 1 of every hue bin
    centres: np.ndarray  # (2,) float: circular mean hue of each cluster, OpenCV units
    weights: np.ndarray  # (2,) float: pixels in each cluster


def find_skin_box(image_bgr: np.ndarray, config: CropConfig = CropConfig()) -> CropResult:
    """The box around the skin region of an 8-bit BGR image (height x width x 3)."""
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an 8-bit BGR image (H, W, 3) of uint8, got "
                         f"{image_bgr.dtype} {image_bgr.shape}")
    height, width = image_bgr.shape[:2]
    hue, chromatic = compute_hue_and_mask(make_analysis_copy(image_bgr, config.analysis_size),
                                          config)
    histogram = compute_hue_histogram(hue, chromatic)
    whole = (0, 0, width, height)
    if histogram.sum() < config.min_chromatic_fraction * hue.size:
        return CropResult(whole, 0.0, 0.0, "no_skin")
    skin_bins = choose_skin_bins(compute_hue_clusters(histogram), config.skin_hues)
    if not skin_bins.any():
        return CropResult(whole, 0.0, 0.0, "no_skin")
    skin = compute_skin_mask(hue, chromatic, skin_bins)
    skin_fraction = cv2.countNonZero(skin) / skin.size
    threshold = compute_threshold(skin_fraction, config)
    rows = compute_line_extent(compute_line_shares(skin, axis=1), threshold)
    columns = compute_line_extent(compute_line_shares(skin, axis=0), threshold)
    box = scale_box((columns[0], rows[0], columns[1], rows[1]), skin.shape, (height, width))
    return CropResult(box, skin_fraction, threshold, "ok")


def crop_image(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The part of `image` inside `box` = (x0, y0, x1, y1), x1 and y1 exclusive."""
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


# --- steps -----------------------------------------------------------------------------------


def make_analysis_copy(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """A copy whose longest side is at most `size` (area averaging, so no aliasing)."""
    height, width = image_bgr.shape[:2]
    scale = size / max(height, width)
    if scale >= 1:
        return image_bgr
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image_bgr, shape, interpolation=cv2.INTER_AREA)


def compute_hue_and_mask(image_bgr: np.ndarray, config: CropConfig):
    """OpenCV hue (uint8, 0-179) and the mask (uint8, 255 = yes) of pixels whose hue is
    usable: saturated and bright enough."""
    hsv = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV)
    lower = (0, config.min_saturation, config.min_value)
    return np.ascontiguousarray(hsv[:, :, 0]), cv2.inRange(hsv, lower, (255, 255, 255))


def compute_hue_histogram(hue: np.ndarray, chromatic: np.ndarray) -> np.ndarray:
    """Pixel count of every hue bin, chromatic pixels only."""
    histogram = cv2.calcHist([hue], [0], chromatic, [HUE_BINS], [0, HUE_BINS])
    return histogram.reshape(-1).astype(np.float64)


def compute_hue_clusters(histogram: np.ndarray) -> HueClusters:
    """Exact K=2 k-means on a circular hue histogram.

    The clusters are two arcs, [a, a + n) and [a + n, a + 180); every (a, n) is scored at once
    from prefix sums over the histogram laid out twice, so the global optimum is found in one
    pass (a Lloyd iteration can stop in a local one, and depends on where it starts).
    """
    weights = np.concatenate([histogram, histogram])
    positions = np.arange(2 * HUE_BINS, dtype=np.float64)
    count, total, squares = (np.concatenate([[0.0], np.cumsum(weights * positions**power)])
                             for power in range(3))
    counts, totals = split_arcs(count), split_arcs(total)
    # Sum of squares about each arc's mean = sum of squares - total**2 / count; the sums of
    # squares of the two arcs add up to one lap from a, whatever n.
    lap = (squares[HUE_BINS:] - squares[:-HUE_BINS])[:-1, None]  # (180, 1)
    cost = lap - sum(arc_total**2 / np.maximum(arc_count, 1e-12)
                     for arc_count, arc_total in zip(counts, totals))
    start, length = np.unravel_index(int(np.argmin(cost)), cost.shape)
    bin_labels = np.ones(HUE_BINS, dtype=np.int64)
    bin_labels[np.arange(start, start + length + 1) % HUE_BINS] = 0  # column 0: n = 1
    count = np.array([arc[start, length] for arc in counts])
    total = np.array([arc[start, length] for arc in totals])
    centres = np.divide(total, count, out=np.full(2, np.nan), where=count > 0) % HUE_BINS
    return HueClusters(bin_labels, centres, count)


def split_arcs(running: np.ndarray):
    """Sums over the arcs [a, a + n) and [a + n, a + 180) for a in 0..179 (rows) and n in
    1..179 (columns), from a prefix sum `running` over two laps; strided views, no copies."""
    ends = np.lib.stride_tricks.sliding_window_view(running, HUE_BINS)[:HUE_BINS, 1:]
    starts, laps = running[:HUE_BINS, None], running[HUE_BINS : 2 * HUE_BINS, None]
    return ends - starts, laps - ends


def choose_skin_bins(clusters: HueClusters, skin_hues: tuple[int, int]) -> np.ndarray:
    """(180,) bool: the hue bins of every cluster whose centre lies in the skin arc."""
    skin_bins = np.zeros(HUE_BINS, dtype=bool)
    for label, (centre, weight) in enumerate(zip(clusters.centres, clusters.weights)):
        if weight > 0 and in_arc(centre, skin_hues):
            skin_bins |= clusters.bin_labels == label
    return skin_bins


def compute_skin_mask(hue, chromatic, skin_bins) -> np.ndarray:
    """uint8 mask, 255 = skin: a chromatic pixel whose hue bin belongs to a skin cluster."""
    table = np.zeros(256, np.uint8)
    table[:HUE_BINS] = np.where(skin_bins, 255, 0)
    return cv2.bitwise_and(cv2.LUT(hue, table), chromatic)


def compute_line_shares(mask: np.ndarray, axis: int) -> np.ndarray:
    """Share of set pixels in each row (axis=1) or column (axis=0) of a 0/255 mask."""
    sums = cv2.reduce(mask, axis, cv2.REDUCE_SUM, dtype=cv2.CV_32S).reshape(-1)
    return sums / (255.0 * mask.shape[axis])


def in_arc(hue: float, arc: tuple[int, int]) -> bool:
    """Whether `hue` lies on the circular arc [start, end) of OpenCV hue."""
    start, end = arc
    return (hue - start) % HUE_BINS < (end - start) % HUE_BINS


def compute_threshold(skin_fraction: float, config: CropConfig) -> float:
    """The image-dependent ratio: the skin share a row or column needs to be kept."""
    low, high = config.ratio_bounds
    return float(np.clip(config.ratio_scale * skin_fraction, low, high))


def compute_line_extent(shares: np.ndarray, threshold: float) -> tuple[int, int]:
    """[first, last + 1) of the lines whose skin share exceeds `threshold`; all if none."""
    kept = np.flatnonzero(shares > threshold)
    if kept.size == 0:
        return 0, shares.size
    return int(kept[0]), int(kept[-1]) + 1


def scale_box(box, small_shape, full_shape) -> tuple[int, int, int, int]:
    """A box on the analysed copy -> the smallest box on the input that covers it."""
    scale_y, scale_x = (full / small for full, small in zip(full_shape, small_shape))
    x0, y0, x1, y1 = box
    return (int(np.floor(x0 * scale_x)), int(np.floor(y0 * scale_y)),
            min(full_shape[1], int(np.ceil(x1 * scale_x))),
            min(full_shape[0], int(np.ceil(y1 * scale_y))))


# --- the original study's method, for comparison ----------------------------------------------

ORIGINAL_DOWNSCALE = 4  # the original clustered a 4x smaller copy
ORIGINAL_SEARCH = (2.1, 2.3)  # columns, rows: scan at most length / bound lines from each end
ORIGINAL_RATIO_BOUNDS = (0.1, 0.3)


def crop_original(image_bgr: np.ndarray, random_state: int = 0) -> tuple[int, int, int, int]:
    """The box found by the original study's `skin_detection.py`, re-implemented.

    As there: the hue (0-1, matplotlib's definition: greys get hue 0; no pixel left out) of a
    4x smaller copy, MiniBatchKMeans with K=2 and scikit-learn 0.22's defaults (batch 100,
    3 starts), ratio = the smaller cluster's share clipped to [0.1, 0.3], then from each side a
    scan that stops at the first line in which the less frequent label exceeds the ratio (a
    line where the clusters mix), searching at most width/2.1 columns and height/2.3 rows;
    the crop is the PIL box (left, top, right, bottom) x 4. It does not decide which cluster is
    skin. Changed: OpenCV's area resize for PIL's, and a fixed seed (the original had none).
    """
    from sklearn.cluster import MiniBatchKMeans  # only the comparison needs scikit-learn

    height, width = image_bgr.shape[:2]
    small_shape = (width // ORIGINAL_DOWNSCALE, height // ORIGINAL_DOWNSCALE)
    small = cv2.resize(image_bgr, small_shape, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small.astype(np.float32) / 255, cv2.COLOR_BGR2HSV)
    hue = hsv[:, :, 0] / 360  # OpenCV gives degrees for float images
    kmeans = MiniBatchKMeans(n_clusters=2, batch_size=100, n_init=3, random_state=random_state)
    labels = kmeans.fit(hue.reshape(-1, 1)).labels_.reshape(hue.shape)
    smaller = min(labels.mean(), 1 - labels.mean())
    ratio = float(np.clip(smaller, *ORIGINAL_RATIO_BOUNDS))
    left, right = scan_original(labels.T, ratio, ORIGINAL_SEARCH[0])
    top, bottom = scan_original(labels, ratio, ORIGINAL_SEARCH[1])
    return tuple(ORIGINAL_DOWNSCALE * value for value in (left, top, right, bottom))


def scan_original(labels: np.ndarray, ratio: float, bound: float) -> tuple[int, int]:
    """Indices of the first mixed line from each end of `labels` (lines along axis 0), as the
    original's `crop_value`; an end with no mixed line in its search range keeps 0 / last."""
    lines, length = labels.shape
    ones = labels.sum(axis=1)
    mixed = np.minimum(ones, length - ones) / length > ratio
    head = np.flatnonzero(mixed[: int(lines / bound)])
    tail_start = int((bound - 1) * lines / bound)
    tail = np.flatnonzero(mixed[tail_start:])
    first = int(head[0]) if head.size else 0
    last = tail_start + int(tail[-1]) if tail.size else lines - 1
    return first, last


# --- synthetic photos with a known skin box (tests and bench/skin_crop.py) -------------------


def make_synthetic_photo(seed: int, size: tuple[int, int] = (450, 600),
                         skin_hue: float | None = None, background: str | None = None,
                         clothes: bool = True):
    """A textured, noisy, JPEG-compressed BGR photo of a skin rectangle and its known box.

    Around the skin: blue cloth or a grey wall (`background` "cloth" / "wall", else by seed),
    a band of dark clothes (unless not `clothes`), and a gold bracelet strip touching the
    rectangle's side. The skin carries red lesions; `skin_hue` (OpenCV units) defaults to a
    random 4-16.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    background = background or ("cloth", "wall")[seed % 2]
    hsv = draw_cloth(rng, size) if background == "cloth" else draw_wall(rng, size)
    if clothes:
        draw_dark_band(rng, hsv)
    box_height, box_width = (int(rng.uniform(0.35, 0.65) * side) for side in size)
    y0 = int(rng.integers(0, height - box_height + 1))
    x0 = int(rng.integers(30, width - box_width - 29))
    box = (x0, y0, x0 + box_width, y0 + box_height)
    draw_bracelet(rng, hsv, box)
    hue = rng.uniform(4, 16) if skin_hue is None else skin_hue
    hsv[y0:box[3], x0:box[2]] = draw_skin(rng, (box_height, box_width), hue)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.float32)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR), box


def smooth_noise(rng, shape, spread: float, cells: int = 6) -> np.ndarray:
    """Low-frequency noise (blotches, folds, shading) of standard deviation about `spread`."""
    coarse = rng.normal(0, spread, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def make_hsv(rng, shape, hue, saturation, value) -> np.ndarray:
    """An HSV uint8 image from per-pixel (or scalar) channels; hue wraps, others clip."""
    channels = [np.broadcast_to(np.asarray(channel, np.float32), shape)
                for channel in (hue, saturation, value)]
    channels[0] = np.mod(np.rint(channels[0]), HUE_BINS)
    return np.dstack([np.clip(channel, 0, 255) for channel in channels]).astype(np.uint8)


def draw_cloth(rng, shape) -> np.ndarray:
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    folds = 0.8 + 0.2 * np.sin(rows / 23.0 + columns / 41.0 + rng.uniform(0, 6))
    return make_hsv(rng, shape, rng.uniform(100, 120) + smooth_noise(rng, shape, 3),
                    rng.uniform(110, 200) + smooth_noise(rng, shape, 15),
                    rng.uniform(120, 210) * folds)


def draw_wall(rng, shape) -> np.ndarray:
    """A grey wall with a faint tint; at this saturation its hue is mostly noise."""
    tint = rng.uniform(0, 180) + rng.normal(0, 25, shape)
    return make_hsv(rng, shape, tint, rng.uniform(0, 14, shape),
                    rng.uniform(150, 210) + smooth_noise(rng, shape, 12))


def draw_dark_band(rng, hsv: np.ndarray) -> None:
    """Dark clothes along one image edge; their hue and saturation are noise."""
    height, width = hsv.shape[:2]
    rows, columns = (int(rng.uniform(0.15, 0.3) * side) for side in (height, width))
    edges = (np.s_[:rows], np.s_[height - rows :], np.s_[:, :columns], np.s_[:, width - columns :])
    region = edges[int(rng.integers(len(edges)))]
    shape = hsv[region].shape[:2]
    hsv[region] = make_hsv(rng, shape, rng.uniform(0, 180, shape), rng.uniform(0, 255, shape),
                           rng.uniform(5, 35, shape))


def draw_bracelet(rng, hsv: np.ndarray, box) -> None:
    """A gold strip, 10-16 px wide, against the left or right side of the skin box."""
    x0, y0, x1, y1 = box
    thickness, length = int(rng.integers(10, 17)), int(0.6 * (y1 - y0))
    top = y0 + int(rng.integers(0, y1 - y0 - length + 1))
    left = x0 - thickness if rng.integers(2) else x1
    shape = (length, thickness)
    hsv[top : top + length, left : left + thickness] = make_hsv(
        rng, shape, rng.uniform(23, 27), rng.uniform(150, 220, shape), rng.uniform(150, 240, shape))


def draw_skin(rng, shape, hue: float) -> np.ndarray:
    """Skin of mean OpenCV hue `hue` with blotches, shading and 3-6 red lesions."""
    hues = hue + smooth_noise(rng, shape, 1.5)
    saturation = rng.uniform(70, 150) + smooth_noise(rng, shape, 12)
    value = rng.uniform(130, 220) + smooth_noise(rng, shape, 15)
    for _ in range(int(rng.integers(3, 7))):
        mask = np.zeros(shape, np.uint8)
        centre = (int(rng.integers(shape[1])), int(rng.integers(shape[0])))
        axes = (int(rng.integers(5, 25)), int(rng.integers(5, 25)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        hues = np.where(mask > 0, hue - 9, hues)
        saturation = np.where(mask > 0, saturation + 40, saturation)
        value = np.where(mask > 0, value - 40, value)
    return make_hsv(rng, shape, hues, saturation, value)
