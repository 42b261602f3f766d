"""Where a classifier looks: the share of its Grad-CAM energy inside the lesion.

For each image of an evaluated split that has a lesion segmentation mask
(``DATA_DIR/masks/<image_id>_segmentation.png``, white = lesion, as HAM10000 ships them), the
Grad-CAM heatmap of the predicted class is laid onto the image's full frame at the mask's
resolution, and

    energy_inside = sum(heatmap * mask) / sum(heatmap)

A uniform heatmap would score the lesion's area fraction: that is each image's chance level.
A model that reads rulers, hair or vignettes instead of the lesion scores near or below it.

``measure_lesion_focus`` runs Grad-CAM (``dermnet.inference.gradcam``) batch by batch on the
evaluation pipeline's own inputs, so the model sees the pixels it was scored on (the plain
view: with test-time augmentation the class is the averaged prediction, the heatmap that of
the untransformed image);
``summarize_lesion_focus`` turns the per-image rows into the figures of metrics.json, with
lesion-grouped bootstrap intervals; ``make_example_panels`` draws a few images for
lesion_focus.png. TensorFlow-specific through Grad-CAM and the tf.data pipeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dermnet.data.lesion_box import box_to_pixels
from dermnet.evaluation.predictions import lesion_box_cache
from dermnet.evaluation.stats import bootstrap_interval
from dermnet.inference.gradcam import make_gradcam, make_overlay, upsample_heatmap
from dermnet.inference.predict import decode_image_file
from dermnet.runs.datasets import make_evaluation_dataset, make_lesion_boxes

MASK_FOLDER = "masks"                # beside images/ in the data folder
MASK_SUFFIX = "_segmentation.png"    # the HAM10000 release's mask names
MOSTLY_INSIDE = 0.5                  # over half the energy inside: the lesion dominates
COLUMNS = ("image", "lesion", "truth", "prediction", "energy_inside", "lesion_area_fraction")
OUTLINE = (255, 255, 255)            # lesion contour colour in lesion_focus.png


@dataclass(frozen=True)
class Example:
    """One panel of lesion_focus.png, everything in the mask's frame."""

    path: Path            # the image file
    heatmap: np.ndarray   # float32 [H, W] in [0, 1], mapped onto the full frame
    mask: np.ndarray      # bool [H, W], True on the lesion
    caption: str


@dataclass(frozen=True)
class LesionFocus:
    """What ``measure_lesion_focus`` found."""

    # COLUMNS (and energy_inside_truth on request), one row per image with a mask;
    # energy_inside is NaN where the heatmap is all zero (no evidence anywhere).
    images: pd.DataFrame
    considered: int                 # images of the split looked at: all, or the limit
    missing_masks: int              # of those, skipped: mask missing or unreadable
    examples: tuple[Example, ...]   # the first measured image of each true class


# --- masks and geometry (pure) ---------------------------------------------------------------


def mask_path(data_dir: str | Path, image_id: str) -> Path:
    return Path(data_dir) / MASK_FOLDER / f"{image_id}{MASK_SUFFIX}"


def load_mask(path: str | Path) -> np.ndarray | None:
    """bool [H, W], True where the mask is white (lesion); None if missing or unreadable."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # None for a missing or broken file
    return None if mask is None else mask > 127


def compute_visible_window(frame_size, input_size, resize: str = "stretch", box=None) -> tuple:
    """(rows, columns) slices of the full image frame (H, W) that the pipeline put into the
    model input of ``input_size``: the lesion crop ``box`` (data.lesion_crop; fractions, as
    ``lesion_box.box_to_pixels`` rounds them) when given, else all of it when stretching;
    when cropping, the centred window of the input's aspect ratio, rounded as
    ``dermnet.data.pipeline.crop_to_aspect``."""
    height, width = frame_size
    if box is not None:
        x0, y0, x1, y1 = box_to_pixels(box, height, width)
        return slice(y0, y1), slice(x0, x1)
    if resize == "stretch":
        return slice(0, height), slice(0, width)
    if resize != "crop":
        raise ValueError(f"resize must be 'stretch' or 'crop', got {resize!r}")
    aspect = input_size[1] / input_size[0]  # W / H of the model input
    new_height, new_width = min(height, round(width / aspect)), min(width, round(height * aspect))
    top, left = (height - new_height) // 2, (width - new_width) // 2
    return slice(top, top + new_height), slice(left, left + new_width)


def map_heatmap_to_frame(heatmap: np.ndarray, frame_size, input_size,
                         resize: str = "stretch", box=None) -> np.ndarray:
    """The inverse of the pipeline's image -> model-input mapping: a heatmap over the model
    input laid onto the full image frame (H, W), bilinear, zero where the model saw nothing."""
    rows, columns = compute_visible_window(frame_size, input_size, resize, box)
    frame = np.zeros(tuple(frame_size), np.float32)
    frame[rows, columns] = upsample_heatmap(heatmap, (rows.stop - rows.start,
                                                      columns.stop - columns.start))
    return frame


def compute_energy_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """sum(heatmap * mask) / sum(heatmap) of same-shaped arrays; NaN for an all-zero heatmap."""
    heatmap = np.asarray(heatmap, np.float64)
    total = heatmap.sum()
    return float(heatmap[np.asarray(mask, bool)].sum() / total) if total > 0 else float("nan")


def compute_area_fraction(mask: np.ndarray) -> float:
    """The lesion's share of the pixels: what a uniform heatmap would score (chance)."""
    return float(np.asarray(mask, bool).mean())


def select_rows(count: int, limit: int | None = None, seed: int = 0) -> np.ndarray:
    """Row indices to measure: all, or ``limit`` of them drawn (seeded) and kept in order.
    Drawn, not the first rows: HAM10000's metadata lists images diagnosis by diagnosis, and a
    split keeps that order, so its first rows would be one class."""
    check_limit(limit)
    if limit is None or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"--lesion-focus-limit must be at least 1, not {limit}")


# --- measuring (TensorFlow) ------------------------------------------------------------------


def compute_heatmaps(evaluation, frame: pd.DataFrame, class_lists: list, batch_size=None):
    """Yield, for each row of ``frame`` in order, a tuple of Grad-CAM heatmaps [h, w]: one per
    array of class indices in ``class_lists``, from the evaluation pipeline's own batches."""
    gradcam = make_gradcam(evaluation.model)
    config = evaluation.config
    dataset = make_evaluation_dataset(frame, evaluation.data, config,
                                      batch_size or config.data.batch_size,
                                      lesion_box_cache(evaluation))
    start = 0
    for inputs, _ in dataset:
        stop = start + int(inputs["image"].shape[0])
        yield from zip(*(gradcam.compute(inputs, classes[start:stop])
                         for classes in class_lists))
        start = stop


def measure_lesion_focus(evaluation, predicted, *, limit: int | None = None,
                         explain_truth: bool = False, batch_size: int | None = None,
                         seed: int = 0) -> LesionFocus:
    """Energy inside the lesion for the rows of ``evaluation.frame`` (all, or ``limit`` drawn
    with ``seed``); ``predicted``: the evaluation's class index per row. ``explain_truth`` adds
    the true class's heatmap as column ``energy_inside_truth``."""
    rows = select_rows(len(evaluation.frame), limit, seed)
    frame = evaluation.frame.iloc[rows].reset_index(drop=True)
    has_mask = np.array([mask_path(evaluation.data.data_dir, image).is_file()
                         for image in frame["image_id"]], bool)
    frame = frame[has_mask].reset_index(drop=True)  # no Grad-CAM for images without a mask
    classes = [np.asarray(predicted)[rows][has_mask]]
    if explain_truth:
        classes.append(frame["label"].to_numpy())
    records, examples = _measure_rows(evaluation, frame, classes, batch_size)
    images = pd.DataFrame(records, columns=[*COLUMNS] + (["energy_inside_truth"]
                                                          if explain_truth else []))
    return LesionFocus(images, len(rows), len(rows) - len(images), tuple(examples.values()))


def _measure_rows(evaluation, frame: pd.DataFrame, classes: list, batch_size) -> tuple:
    """Per-image records and the first example of each true class."""
    if frame.empty:
        return [], {}
    names = evaluation.data.output_names
    geometry = (tuple(evaluation.config.data.image_size), evaluation.config.data.resize)
    boxes = make_lesion_boxes(frame, evaluation.config, lesion_box_cache(evaluation))
    boxes = [None] * len(frame) if boxes is None else boxes
    records, examples = [], {}
    heatmaps = compute_heatmaps(evaluation, frame, classes, batch_size)
    for row, predicted, maps, box in zip(frame.itertuples(), classes[0], heatmaps, boxes):
        mask = load_mask(mask_path(evaluation.data.data_dir, row.image_id))
        if mask is None:
            continue  # unreadable: counted as missing by the caller
        shares, frame_heatmap, area = _measure_image(maps, mask, (*geometry, box))
        truth, prediction = names[row.label], names[predicted]
        records.append((row.image_id, row.lesion_id, truth, prediction, *shares[:1], area,
                        *shares[1:]))
        if truth not in examples and not np.isnan(shares[0]):
            examples[truth] = Example(Path(row.path), frame_heatmap, mask,
                                      f"{truth} -> {prediction}: {shares[0]:.0%} inside "
                                      f"(chance {area:.0%})")
    return records, examples


def _measure_image(heatmaps: tuple, mask: np.ndarray, geometry: tuple) -> tuple:
    """(energy share per heatmap, the first heatmap in the frame, the visible lesion area)."""
    window = compute_visible_window(mask.shape, *geometry)
    framed = [map_heatmap_to_frame(heatmap, mask.shape, *geometry) for heatmap in heatmaps]
    shares = [compute_energy_share(heatmap, mask) for heatmap in framed]
    return shares, framed[0], compute_area_fraction(mask[window])


def run_lesion_focus(evaluation, predicted, *, limit: int | None = None,
                     n_resamples: int = 2000, seed: int = 0, log=print) -> tuple:
    """(the metrics.json entry, the ``LesionFocus`` or None): skipped with one notice when
    the data folder has no masks/ folder."""
    data_dir = Path(evaluation.data.data_dir)
    if not (data_dir / MASK_FOLDER).is_dir():
        reason = f"no {MASK_FOLDER}/ folder in {data_dir}"
        log(f"lesion focus: skipped, {reason}")
        return {"skipped": reason}, None
    start = time.perf_counter()
    focus = measure_lesion_focus(evaluation, predicted, limit=limit, seed=seed)
    log(f"lesion focus: Grad-CAM of {len(focus.images)} images in "
        f"{time.perf_counter() - start:.1f} s; {focus.missing_masks} skipped without a mask")
    summary = summarize_lesion_focus(focus, n_resamples=n_resamples, seed=seed,
                                     class_names=evaluation.data.output_names)
    return {**summary, "limit": limit, "split_images": len(evaluation.frame)}, focus


# --- figures ---------------------------------------------------------------------------------


def summarize_lesion_focus(focus: LesionFocus, *, n_resamples: int = 2000,
                           confidence: float = 0.95, seed: int = 0, class_names=()) -> dict:
    """The metrics.json entry: counts, then all images and each true class (``summarize_group``)."""
    images = focus.images
    names = list(class_names) or sorted(images["truth"].unique())
    group = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    return {
        "explained_class": "predicted",
        "measures": "share of the Grad-CAM energy of the predicted class inside the lesion "
                    "mask; chance: the lesion's area fraction (a uniform heatmap's share)",
        "num_images": focus.considered, "num_with_mask": len(images),
        "skipped_without_mask": focus.missing_masks,
        "zero_heatmap": int(images["energy_inside"].isna().sum()),
        "mostly_inside_threshold": MOSTLY_INSIDE, "confidence": confidence,
        "n_resamples": n_resamples,
        "overall": summarize_group(images, **group),
        "per_class": {name: summarize_group(images[images["truth"] == name], **group)
                      for name in names},
    }


def summarize_group(rows: pd.DataFrame, *, n_resamples: int = 2000, confidence: float = 0.95,
                    seed: int = 0) -> dict:
    """Images with a non-zero heatmap: n, mean energy share with a lesion-bootstrap interval,
    mean area fraction (chance), mean per-image ratio share / area (images with a lesion)
    and the share of images with more than half the energy inside."""
    measured = rows[rows["energy_inside"].notna()]
    shares = measured["energy_inside"].to_numpy(np.float64)
    areas = measured["lesion_area_fraction"].to_numpy(np.float64)
    with_lesion = areas > 0  # an empty mask has no chance level to compare with
    return {
        "n": len(measured), "num_lesions": int(measured["lesion"].nunique()),
        "zero_heatmap": len(rows) - len(measured),
        "energy_inside": _mean_with_interval(shares, measured["lesion"].to_numpy(),
                                             n_resamples, confidence, seed),
        "lesion_area_fraction": _mean(areas),
        "ratio_to_chance": _mean(shares[with_lesion] / areas[with_lesion]),
        "mostly_inside": _mean(shares > MOSTLY_INSIDE),
    }


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _mean_with_interval(values, groups, n_resamples, confidence, seed) -> dict:
    entry = {"value": _mean(values), "low": float("nan"), "high": float("nan"),
             "method": "bootstrap-lesions"}
    if len(values):
        entry["low"], entry["high"] = bootstrap_interval(
            lambda indices: values[indices].mean(), groups, n_resamples, confidence, seed)
    return entry


# --- lesion_focus.csv and .png ---------------------------------------------------------------


def save_lesion_focus_csv(focus: LesionFocus, path: Path) -> None:
    """Per image; 17 significant digits, so the means recomputed from it equal metrics.json."""
    focus.images.to_csv(path, index=False, float_format="%.17g")


def make_example_panels(focus: LesionFocus) -> list[tuple[np.ndarray, str]]:
    """(RGB image, caption) per example: the image at the mask's size, its heatmap in the
    JET colormap over it, the lesion's outline in white."""
    return [(draw_example(example), example.caption) for example in focus.examples]


def draw_example(example: Example) -> np.ndarray:
    height, width = example.mask.shape
    image = cv2.resize(decode_image_file(example.path), (width, height),
                       interpolation=cv2.INTER_AREA)
    overlay = make_overlay(image, example.heatmap)
    contours, _ = cv2.findContours(example.mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    return cv2.drawContours(np.ascontiguousarray(overlay), contours, -1, OUTLINE, 1)
