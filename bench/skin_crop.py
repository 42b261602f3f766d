"""Benchmark of the skin crop (preprocess.skin_crop) against the original study's method.

On synthetic 600x450 photos with a known skin rectangle (`make_synthetic_photo`: blue cloth or
a grey wall, dark clothes, a gold bracelet, red lesions; JPEG-compressed) it measures, on one
core (OpenCV, BLAS and OpenMP limited to one thread):
  - ms per image of `find_skin_box` (ours: exact K=2 k-means on the circular hue histogram
    of the chromatic pixels of a 300x225 copy, then the row/column scan);
  - ms per image of `crop_original` (the study's code: MiniBatchKMeans on the hue of a 4x
    smaller copy, its row/column scan);
  - crop quality of both: mean IoU with the true skin box, the share of crops that contain it
    (4 px slack), and the share of the background they remove; on three sets (`SETS`): the
    standard scenes, the same scenes with a skin hue straddling the 179 -> 0 wrap, and plain
    blue cloth without dark clothes (the easy case for the original).
Image decoding is not timed. Prints a table and writes JSON (default
bench/results/skin_crop.json). Run from the repository root:
    python bench/skin_crop.py [--num-images N] [--original-images N] [--out PATH] [--quick]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# Run from a checkout without `pip install -e .`: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from preprocess.skin_crop import crop_original, find_skin_box, make_synthetic_photo  # noqa: E402

SLACK = 4  # px a crop may miss the true box by and still "contain" it
SETS = {  # name -> make_synthetic_photo options; seeds 0..N-1 in each
    "standard": {},  # blue cloth or grey wall (alternating), dark clothes, bracelet
    "red_skin": {"skin_hue": 0.0},  # the same scenes, skin hue straddling 179 -> 0
    "plain_cloth": {"background": "cloth", "clothes": False},  # the easy case: cloth only
}
METHODS = {"ours": lambda image: find_skin_box(image).box, "original": crop_original}


def main(argv=None) -> None:
    args = parse_args(argv)
    cv2.setNumThreads(1)
    with threadpool_limits(limits=1):
        results = {"meta": describe_machine(args)}
        for name, options in SETS.items():
            photos = [make_synthetic_photo(seed, **options) for seed in range(args.num_images)]
            results[name] = {method: measure(function, photos, args, method)
                             for method, function in METHODS.items()}
    results["meta"]["load_average_end"] = os.getloadavg()
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100, help="synthetic photos per set")
    parser.add_argument("--original-images", type=int, default=100,
                        help="photos per set for the (slow) original method")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per image (ours)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/skin_crop.json"))
    parser.add_argument("--quick", action="store_true", help="20 photos, 5 for the original")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_images, args.original_images, args.repeats = 20, 5, 2
    return args


def describe_machine(args) -> dict:
    return {
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "image_size": "600x450",
        "num_images": args.num_images,
        "original_images": args.original_images,
        "repeats": args.repeats,
        "load_average_start": os.getloadavg(),
    }


# --- measurements ----------------------------------------------------------------------------


def measure(function, photos, args, method: str) -> dict:
    """Timing and quality of one method on one set."""
    if method == "original":
        photos = photos[: args.original_images]
    repeats = args.repeats if method == "ours" else 1
    function(photos[0][0])  # the first call pays for imports and allocations
    times, boxes = [], []
    for image, _ in photos:
        box, seconds = time_call(function, image, repeats)
        times.append(seconds * 1e3)
        boxes.append(box)
    result = {"images": len(photos), "ms_median": statistics.median(times),
              "ms_mean": statistics.fmean(times), "ms_max": max(times)}
    result.update(score_boxes(boxes, [box for _, box in photos], photos[0][0].shape[:2]))
    print(f"  {method:<9} {result['ms_median']:8.2f} ms  IoU {result['iou_mean']:.3f}", flush=True)
    return result


def time_call(function, image, repeats: int):
    """The result of `function(image)` and its fastest time of `repeats` calls (the least
    disturbed by other processes on a shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        box = function(image)
        best = min(best, time.perf_counter() - start)
    return box, best


def score_boxes(boxes, truths, shape) -> dict:
    ious = [compute_iou(box, truth) for box, truth in zip(boxes, truths)]
    contained = [contains(box, truth) for box, truth in zip(boxes, truths)]
    removed = [background_removed(box, truth, shape) for box, truth in zip(boxes, truths)]
    return {"iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)),
            "contains_truth": float(np.mean(contained)),
            "background_removed_mean": float(np.mean(removed))}


def area(box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def intersection(first, second) -> int:
    return area((max(first[0], second[0]), max(first[1], second[1]),
                 min(first[2], second[2]), min(first[3], second[3])))


def compute_iou(first, second) -> float:
    overlap = intersection(first, second)
    return overlap / (area(first) + area(second) - overlap)


def contains(box, truth) -> bool:
    return (box[0] <= truth[0] + SLACK and box[1] <= truth[1] + SLACK
            and box[2] >= truth[2] - SLACK and box[3] >= truth[3] - SLACK)


def background_removed(box, truth, shape) -> float:
    """Share of the background (everything outside the true box) that the crop cuts away."""
    background = shape[0] * shape[1] - area(truth)
    return 1 - (area(box) - intersection(box, truth)) / background


# --- report ----------------------------------------------------------------------------------


def print_table(results: dict) -> None:
    columns = ("ms_median", "ms_mean", "iou_mean", "iou_min", "contains_truth",
               "background_removed_mean")
    headers = ("ms median", "ms mean", "IoU mean", "IoU min", "contains", "bg removed")
    print(f"\n{'set':<11} {'method':<9} {'images':>6} " + " ".join(f"{h:>10}" for h in headers))
    for name in SETS:
        for method, row in results[name].items():
            print(f"{name:<11} {method:<9} {row['images']:>6} "
                  + " ".join(f"{row[key]:10.3f}" for key in columns))
    meta = results["meta"]
    print(f"600x450, one thread, {meta['cpu_count']} CPUs, OpenCV {meta['opencv']}, "
          f"scikit-learn {meta['scikit_learn']}, load average {meta['load_average_start']} -> "
          f"{meta['load_average_end']}")


if __name__ == "__main__":
    main()
