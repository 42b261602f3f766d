"""Benchmark of the mask-free lesion box (dermnet.data.lesion_box) against the real masks.

On the real HAM10000 images at 200x150 (``images/ISIC_*.jpg`` with the lesion masks
``masks/ISIC_*_segmentation.png``, white = lesion), for every image (or ``--limit N``, an
evenly spread subset) it measures:
  - iou: IoU of the estimated box with the mask's bounding box (the estimate itself, no margin);
  - covered: share of the mask's pixels inside the crop box (`expand_box`, margin --margin,
    the model input's aspect --aspect), i.e. how much lesion a lesion crop would keep;
  - whole: share of images whose crop box keeps the entire mask;
  - crop_area: the crop box's share of the image (how far a crop zooms in);
  - fallback: share of images where no lesion was found (whole image used);
  - baseline_iou: IoU of the whole image with the mask box, what no estimate achieves;
  - ms per image of `estimate_lesion_box` on one core (decoding not timed);
per class (dx of HAM10000_metadata.csv) and overall. Images without a mask (or an empty
one) are counted and skipped. Prints a table and writes JSON (default
bench/results/lesion_box.json). Run from the repository root:
    python bench/lesion_box.py [--data-dir DIR] [--limit N] [--margin 0.25] [--out PATH]
DIR defaults to $DERMNET_HAM10000_IMAGES, else ../shared/data/ham10000_200x150.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# Run from a checkout without `pip install -e .`: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dermnet.data.lesion_box import (  # noqa: E402
    WHOLE_IMAGE,
    box_from_mask,
    box_iou,
    box_to_pixels,
    estimate_lesion_box,
    expand_box,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ham10000_200x150"
CLASSES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
FIGURES = ("iou", "covered", "whole", "crop_area", "fallback", "baseline_iou", "ms")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    env = os.environ.get("DERMNET_HAM10000_IMAGES")
    parser.add_argument("--data-dir", type=Path, default=Path(env) if env else DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="evenly spread subset of N")
    parser.add_argument("--margin", type=float, default=0.25)  # the crop margin measured
    parser.add_argument("--aspect", type=float, default=4 / 3)  # model input W / H (300x224)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/lesion_box.json")
    return parser.parse_args(argv)


def resolve_folder(path: Path) -> Path:
    """The dataset folder, also when the variable names its images/ subfolder."""
    return path.parent if path.name == "images" else path


def select_rows(metadata: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """All rows, or `limit` rows evenly spread over the file (every class represented)."""
    if limit is None or limit >= len(metadata):
        return metadata
    return metadata.iloc[np.linspace(0, len(metadata) - 1, limit).astype(int)]


def measure_image(folder: Path, image_id: str, margin: float, aspect: float) -> dict | None:
    """The figures of one image; None when its mask is missing or empty."""
    mask = cv2.imread(str(folder / "masks" / f"{image_id}_segmentation.png"), cv2.IMREAD_GRAYSCALE)
    truth = None if mask is None else box_from_mask(mask > 127)
    if truth is None:
        return None
    image = cv2.cvtColor(cv2.imread(str(folder / "images" / f"{image_id}.jpg")), cv2.COLOR_BGR2RGB)
    start = time.perf_counter()
    box, found = estimate_lesion_box(image)
    elapsed = time.perf_counter() - start
    height, width = mask.shape
    crop = expand_box(box, margin, aspect, width / height)
    left, top, right, bottom = box_to_pixels(crop, height, width)
    lesion = mask > 127
    covered = lesion[top:bottom, left:right].sum() / lesion.sum()
    return {"iou": box_iou(box, truth), "covered": float(covered), "whole": float(covered == 1),
            "crop_area": (right - left) * (bottom - top) / (height * width),
            "fallback": float(not found), "baseline_iou": box_iou(WHOLE_IMAGE, truth),
            "ms": elapsed * 1000}


def summarise(rows: pd.DataFrame) -> dict:
    return {"images": int(len(rows)), **{name: float(rows[name].mean()) for name in FIGURES},
            "iou_median": float(rows["iou"].median()),
            "iou_below_0.5": float((rows["iou"] < 0.5).mean())}


def print_table(results: dict) -> None:
    header = ["group", "images", "iou", "iou_med", "iou<0.5", "covered", "whole", "crop_area",
              "fallback", "base_iou", "ms"]
    print(" | ".join(header))
    for group, row in results.items():
        print(" | ".join([group, str(row["images"])] + [f"{row[key]:.3f}" for key in (
            "iou", "iou_median", "iou_below_0.5", "covered", "whole", "crop_area", "fallback",
            "baseline_iou")] + [f"{row['ms']:.2f}"]))


def main(argv=None) -> dict:
    args = parse_args(argv)
    cv2.setNumThreads(1)  # one core: the timing is per image, not per machine
    folder = resolve_folder(args.data_dir)
    metadata = select_rows(pd.read_csv(folder / "HAM10000_metadata.csv"), args.limit)
    measured = [(row.dx, measure_image(folder, row.image_id, args.margin, args.aspect))
                for row in metadata.itertuples()]
    rows = pd.DataFrame([{"dx": dx, **figures} for dx, figures in measured if figures])
    results = {"all": summarise(rows)}
    results |= {dx: summarise(rows[rows["dx"] == dx]) for dx in CLASSES if (rows["dx"] == dx).any()}
    report = {"data_dir": str(folder), "margin": args.margin, "aspect": args.aspect,
              "without_mask": sum(figures is None for _, figures in measured),
              "machine": platform.processor() or platform.machine(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(results)
    print(f"images without a usable mask: {report['without_mask']}; written {args.out}")
    return report


if __name__ == "__main__":
    main()
