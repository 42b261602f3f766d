"""Where the lesion is: a mask-free estimate of a dermoscopic lesion's bounding box.

Image banks frame lesions at different scales (HAM10000 centres them with a margin; others
fill the frame, or show a small lesion in a wide field inside a dark dermoscope vignette). A
lesion-centred crop puts every image at a common scale, but other banks have no masks, so
the box comes from the image alone, by the same classical estimate at training and test:

    downscale (longest side 128)   speed; a working scale independent of the source's size
    field of view                  dark regions at the border lying mostly outside the
                                   inscribed ellipse are vignette or frame, not lesion
    lesion map                     darker than the skin's illumination (a robust quadratic
                                   fit: lighting falls off towards the edges) plus more
                                   saturated than the skin (CIELAB chroma), lightly blurred
    threshold                      between the skin's mean and Otsu's threshold, over the
                                   field of view; too little contrast: no lesion
    components                     opened (hair) and closed (speckle); components mostly on
                                   the rim are soft vignette: dropped, and the threshold redone
                                   without them; then the largest component weighted by
                                   centrality, with the components of comparable weight

On HAM10000's masks: mean box IoU 0.79, and a margin-0.25 crop keeps 99.8% of the lesion's
pixels (bench/lesion_box.py, bench/results/lesion_box.json).

A box is (x0, y0, x1, y1), fractions of the image's width and height, x1 / y1 exclusive:
pixel columns [x0 * W, x1 * W). When nothing sensible is found the estimate falls back to
the whole image (0, 0, 1, 1) and says so (found=False). `expand_box` turns an estimate into
a crop box (margin, the model input's aspect ratio, clipped to the image); `box_from_mask`
and `box_iou` measure the estimate against real masks (bench/lesion_box.py). No TensorFlow.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
WORKING_SIDE = 128       # px, the longest side of the copy the estimate works on
BLUR_FRACTION = 0.015    # Gaussian sigma as a share of the working side: merges speckle
VIGNETTE_DARKNESS = 0.5  # vignette / frame: darker than this share of the centre's median grey
VIGNETTE_RADIUS = 0.9    # normalised radius (1 = inscribed ellipse) beyond which is "rim"
VIGNETTE_SHARE = 0.6     # a border region with this share of its pixels on the rim is vignette
MIN_CONTRAST = 8.0       # lesion-map units (CIELAB) between the Otsu classes' means, at least
MIN_AREA = 0.005         # smallest component kept, as a share of the field of view
MAX_AREA = 0.97          # a "lesion" covering more of the field of view is no separation
CHROMA_WEIGHT = 2.0      # saturation against darkness in the lesion map (tuned on masks)
SKIN_RADIUS = 0.6        # the skin's chroma is the median beyond this radius (lesions are central)
CENTRALITY = 0.5         # Gaussian width, in half-image units, of the preference for the centre
FIT_ROUNDS = 3           # robust refits of the skin's illumination surface
# The threshold sits this share of the way from the skin's mean up to Otsu's: Otsu alone
# cuts inside the lesion (boxes ~20% too small in area on HAM10000's masks).
THRESHOLD_SHARE = 0.6
ROUNDS = 3               # thresholding rounds, each without the vignette shading found
COMPANION_SHARE = 0.2    # other components at least this share of the main one join its box


# --- boxes (pure geometry) -----------------------------------------------------------------


def box_from_mask(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """The box of a mask's True (or non-zero) pixels as fractions; None for an empty mask."""
    mask = np.asarray(mask, bool)
    rows, columns = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    top, bottom = np.flatnonzero(rows)[[0, -1]]
    left, right = np.flatnonzero(columns)[[0, -1]]
    height, width = mask.shape
    return (float(left / width), float(top / height), float((right + 1) / width),
            float((bottom + 1) / height))


def box_iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1) in the same units."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return float(intersection / union) if union > 0 else 0.0


def expand_box(box, margin: float, aspect: float, image_aspect: float,
               min_size: float = 0.0) -> tuple[float, float, float, float]:
    """The crop box around `box`: each side moved out by `margin` x the box's size, the
    shorter side grown until width / height (in pixels) is `aspect` (the model input's W / H),
    each side at least `min_size` of the image's, then shifted inside the image and clipped
    to it (a box larger than the image loses its aspect ratio, never the lesion).
    `image_aspect` is the image's W / H: fractions of width and height differ in pixels."""
    # Work in units of the image height: x spans [0, image_aspect], y spans [0, 1].
    x0, y0, x1, y1 = box
    centre_x, centre_y = (x0 + x1) / 2 * image_aspect, (y0 + y1) / 2
    width = (x1 - x0) * image_aspect * (1 + 2 * margin)
    height = (y1 - y0) * (1 + 2 * margin)
    width, height = max(width, height * aspect), max(height, width / aspect)
    width = min(max(width, min_size * image_aspect), image_aspect)
    height = min(max(height, min_size), 1.0)
    left = _clip(centre_x - width / 2, 0.0, image_aspect - width)
    top = _clip(centre_y - height / 2, 0.0, 1.0 - height)
    return (left / image_aspect, top, min((left + width) / image_aspect, 1.0),
            min(top + height, 1.0))


def box_to_pixels(box, height: int, width: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixel window of a box on an image of height x width:
    floor(fraction x size + 0.5) in float64 of the box as float32, at least one pixel, inside
    the image. The pipeline (`pipeline.crop_to_box`) rounds the same way, so both cut the
    same window."""
    box = np.asarray(box, np.float32).astype(np.float64)  # as the pipeline's float32 boxes
    left, right = _to_pixels(box[0], box[2], width)
    top, bottom = _to_pixels(box[1], box[3], height)
    return left, top, right, bottom


def _to_pixels(start: float, stop: float, size: int) -> tuple[int, int]:
    first = min(max(int(np.floor(start * size + 0.5)), 0), size - 1)
    last = min(max(int(np.floor(stop * size + 0.5)), first + 1), size)
    return first, last


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), max(high, low))


# --- the estimate --------------------------------------------------------------------------


def estimate_lesion_box(image_rgb: np.ndarray) -> tuple[tuple[float, float, float, float], bool]:
    """(box, found) for a uint8 RGB image [H, W, 3]: the lesion's estimated box as fractions,
    or the whole image and found=False when no lesion stands out from the skin."""
    small = _downscale(np.asarray(image_rgb, np.uint8))
    view = _field_of_view(small)
    if view.sum() < MIN_AREA * view.size:
        return WHOLE_IMAGE, False
    lesion = _segment(_lesion_map(small, view), view)
    box = None if lesion is None else box_from_mask(lesion)
    return (WHOLE_IMAGE, False) if box is None else (box, True)


def estimate_crop_box(image_rgb: np.ndarray, margin: float, aspect: float,
                      min_size: float = 0.0) -> tuple[tuple[float, float, float, float], bool]:
    """(crop box, found): `expand_box` of the lesion estimate for this image's own aspect
    ratio; the whole image when no lesion is found. What a lesion-centred input pipeline
    cuts, at training and at prediction alike."""
    box, found = estimate_lesion_box(image_rgb)
    height, width = image_rgb.shape[:2]
    return expand_box(box, margin, aspect, width / height, min_size), found


def estimate_lesion_boxes(paths, margin: float | None = None, aspect: float = 4 / 3,
                          min_size: float = 0.0, workers: int = 2):
    """(boxes float32 [N, 4], found bool [N]) for image files, read with OpenCV in a thread
    pool (cv2 releases the GIL). Without `margin` the boxes are the lesion estimates; with
    it, the crop boxes of `estimate_crop_box`. An unreadable file raises ValueError."""
    def one(path):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image {path}")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if margin is None:
            return estimate_lesion_box(image)
        return estimate_crop_box(image, margin, aspect, min_size)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(one, paths))
    boxes = np.array([box for box, _ in results], np.float32).reshape(-1, 4)
    return boxes, np.array([found for _, found in results], bool)


def _downscale(image: np.ndarray) -> np.ndarray:
    """A copy whose longest side is at most WORKING_SIDE (area averaging)."""
    height, width = image.shape[:2]
    scale = WORKING_SIDE / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@functools.lru_cache(maxsize=8)
def _radius(shape: tuple[int, int]) -> np.ndarray:
    """Normalised distance from the image centre: 1 on the inscribed ellipse, ~1.41 at corners."""
    height, width = shape
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = np.hypot((columns + 0.5) / width * 2 - 1, (rows + 0.5) / height * 2 - 1)
    radius.setflags(write=False)  # shared between calls and threads
    return radius


def _field_of_view(small: np.ndarray) -> np.ndarray:
    """bool [h, w]: False on vignette and black frames, i.e. dark regions touching the
    border that lie mostly on the rim (a lesion reaching the border lies mostly inside)."""
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    centre = grey[_radius(grey.shape[:2]) < 0.5]
    level = VIGNETTE_DARKNESS * float(np.median(centre if centre.size else grey))
    dark = (grey < level).astype(np.uint8)
    count, labels = cv2.connectedComponents(dark, connectivity=8)
    rim = _radius(grey.shape[:2]) > VIGNETTE_RADIUS
    view = np.ones(grey.shape, bool)
    for label in _border_labels(labels, count):
        region = labels == label
        if rim[region].mean() >= VIGNETTE_SHARE:
            view &= ~region
    return view


def _border_labels(labels: np.ndarray, count: int) -> list[int]:
    """Component labels (not background 0) that touch the image border."""
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return [label for label in np.unique(border) if 0 < label < count]


def _lesion_map(small: np.ndarray, view: np.ndarray) -> np.ndarray:
    """float32 [h, w], high on the lesion, in CIELAB units: how much darker than the skin's
    fitted illumination, plus CHROMA_WEIGHT x how much more saturated than the skin."""
    sigma = BLUR_FRACTION * max(small.shape[:2])
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    lab = cv2.GaussianBlur(lab, (0, 0), sigma)
    lightness, chroma = lab[..., 0], np.hypot(lab[..., 1], lab[..., 2])
    # Chroma varies little with shading: the median of the rim (mostly skin) is its level.
    rim = view & (_radius(small.shape[:2]) > SKIN_RADIUS)
    skin_chroma = np.median(chroma[rim if rim.sum() >= 16 else view])
    darker = np.maximum(_fit_illumination(lightness, view) - lightness, 0.0)
    return (darker + CHROMA_WEIGHT * np.maximum(chroma - skin_chroma, 0.0)).astype(np.float32)


def _fit_illumination(lightness: np.ndarray, view: np.ndarray) -> np.ndarray:
    """The skin's lightness as a quadratic surface over the image, fitted to the field of
    view and refitted without pixels well below it (the lesion, hair): flattens the uneven
    lighting and soft vignettes that would otherwise look darker than the skin."""
    terms = _quadratic_terms(lightness.shape)  # [h * w, 6]
    values, skin = lightness.reshape(-1), view.reshape(-1)
    for _ in range(FIT_ROUNDS):
        chosen = terms[skin]
        # Normal equations by einsum: a 6x6 solve, and no BLAS threads fighting the pool's.
        gram = np.einsum("ni,nj->ij", chosen, chosen)
        # A whisker of ridge keeps a degenerate field of view (a line of pixels) solvable.
        coefficients = np.linalg.solve(gram + 1e-6 * np.eye(6),
                                       np.einsum("ni,n->i", chosen, values[skin]))
        fitted = np.einsum("ni,i->n", terms, coefficients)
        residual = values - fitted
        spread = 1.4826 * np.median(np.abs(residual[skin])) + 1e-6  # robust sigma (MAD)
        skin = view.reshape(-1) & (residual > -spread)
    return fitted.reshape(lightness.shape)


@functools.lru_cache(maxsize=8)
def _quadratic_terms(shape: tuple[int, int]) -> np.ndarray:
    """float64 [h * w, 6]: 1, x, y, x^2, y^2, xy at each pixel centre, x and y in [-1, 1]."""
    height, width = shape
    rows, columns = np.mgrid[0:height, 0:width]
    x, y = (columns + 0.5) / width * 2 - 1, (rows + 0.5) / height * 2 - 1
    terms = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1).reshape(-1, 6)
    terms.setflags(write=False)  # shared between calls and threads
    return terms


def _segment(lesion_map: np.ndarray, view: np.ndarray) -> np.ndarray | None:
    """bool [h, w] of the chosen lesion components, or None when nothing stands out. A
    component lying mostly on the rim is vignette shading, not lesion: it leaves the field
    of view and the threshold is recomputed without it (it had pulled Otsu towards itself)."""
    rim = _radius(view.shape[:2]) > VIGNETTE_RADIUS
    for _ in range(ROUNDS):
        foreground = _threshold(lesion_map, view)
        if foreground is None:
            return None
        count, labels = cv2.connectedComponents(foreground, connectivity=8)
        shading = [label for label in range(1, count)
                   if rim[labels == label].mean() >= VIGNETTE_SHARE]
        if not shading:
            break
        view = view & ~np.isin(labels, shading)
    # After the last round, shading still found is left out all the same.
    return _choose_components(foreground * view, view.sum())


def _threshold(lesion_map: np.ndarray, view: np.ndarray) -> np.ndarray | None:
    """uint8 [h, w] foreground of Otsu's threshold over the field of view, cleaned by an
    opening (hair) and a closing (speckled lesions); None without enough contrast."""
    values = lesion_map[view]
    if len(values) < MIN_AREA * view.size:
        return None
    threshold = _otsu(values)
    low, high = values[values <= threshold], values[values > threshold]
    if not len(high) or not len(low) or high.mean() - low.mean() < MIN_CONTRAST:
        return None
    # Otsu splits at the lesion's steepest edge; its faint rim lies nearer the skin.
    threshold = low.mean() + THRESHOLD_SHARE * (threshold - low.mean())
    foreground = ((lesion_map > threshold) & view).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, kernel)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of float values (256 bins over their range)."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        return high
    scaled = np.round((values - low) / (high - low) * 255).astype(np.uint8).reshape(1, -1)
    level, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return low + level / 255 * (high - low)


def _choose_components(foreground: np.ndarray, view_area: int) -> np.ndarray | None:
    """bool [h, w]: the component of plausible size with the largest area x centrality, with
    every other whose area x centrality is at least COMPANION_SHARE of it (a lesion broken
    into pieces); None when no component is of a plausible size."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    height, width = foreground.shape
    offsets = (centroids[1:] / (width, height)) * 2 - 1  # centroid, -1..1 from the centre
    centrality = np.exp(-np.sum(offsets ** 2, axis=1) / (2 * CENTRALITY ** 2))
    plausible = (areas >= MIN_AREA * view_area) & (areas <= MAX_AREA * view_area)
    if not plausible.any():
        return None
    score = np.where(plausible, areas * centrality, -1.0)
    main = int(np.argmax(score))
    chosen = plausible & (areas * centrality >= COMPANION_SHARE * score[main])
    return np.isin(labels, np.flatnonzero(chosen) + 1)
