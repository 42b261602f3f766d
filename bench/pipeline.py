"""Benchmark of the dermnet input pipeline against the 2020-era ImageDataGenerator baseline.

Writes a phantom HAM10000 set of 600x450 JPEGs once (cached under the temp folder, or
--data-dir), then measures images/s at 224x300 and 450x600 (H x W):
  - dermnet, full geometric augmentation (rotation, zoom, shear, translation, both flips):
    the first epoch (decode + memory cache + augment) and the cached epochs after it;
  - dermnet, decode epoch alone (the first epoch of an unaugmented pipeline);
  - dermnet, the paper preset (geometry + camera distortions), cached epochs, 224x300 only;
  - ImageDataGenerator(...).flow_from_dataframe(...) with the same geometric augmentation.
and the memory of the uint8 cache (RSS growth per cached image). Prints a table and writes
JSON (default bench/results/pipeline.json). Run from the repository root:
    python bench/pipeline.py [--num-images N] [--data-dir DIR] [--out PATH] [--quick]
"""

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Run from a checkout without `pip install -e .`: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from dermnet.data.augment_config import AugmentConfig  # noqa: E402
from dermnet.data.phantom import write_phantom  # noqa: E402
from dermnet.data.pipeline import PipelineConfig, build_dataset  # noqa: E402
from dermnet.data.vocabulary import CLASSES, IMAGE_FOLDERS, METADATA_FILENAME  # noqa: E402

RESOLUTIONS = ((224, 300), (450, 600))  # (H, W): the paper's low and high resolutions
FULL_SET = 10_015  # images in HAM10000, for the cache-size extrapolation


def main(argv=None) -> None:
    args = parse_args(argv)
    paths, labels = load_phantom(args.data_dir or default_data_dir(args.num_images),
                                 args.num_images)
    results = {"meta": describe_machine(len(paths), args)}
    for size in RESOLUTIONS:
        results[f"{size[0]}x{size[1]}"] = measure_resolution(paths, labels, size, args)
    results["cache_memory"] = measure_cache_memory(paths, labels)
    results["meta"]["load_average_end"] = os.getloadavg()
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=1000, help="phantom images to use")
    parser.add_argument("--data-dir", type=Path, help="phantom dataset folder (made if absent)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    parser.add_argument("--epochs", type=int, default=3, help="cached epochs to time")
    parser.add_argument("--repeats", type=int, default=2, help="fresh pipelines per figure")
    parser.add_argument("--baseline-batches", type=int, default=16,
                        help="ImageDataGenerator batches to time per resolution")
    parser.add_argument("--quick", action="store_true", help="200 images, fewer epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_images, args.epochs, args.repeats, args.baseline_batches = 200, 2, 1, 4
    return args


def default_data_dir(num_images: int) -> Path:
    return Path(tempfile.gettempdir()) / f"dermnet-bench-phantom-{num_images}"


def load_phantom(data_dir: Path, num_images: int):
    """Image paths and class indices of a phantom set, written first if absent."""
    if not (data_dir / METADATA_FILENAME).is_file():
        print(f"writing {num_images} phantom 600x450 JPEGs to {data_dir} ...", flush=True)
        write_phantom(data_dir, num_images, seed=0, image_size=(450, 600))
    metadata = pd.read_csv(data_dir / METADATA_FILENAME).head(num_images)
    files = {path.stem: path for folder in IMAGE_FOLDERS for path in (data_dir / folder).glob("*")}
    paths = [str(files[image_id]) for image_id in metadata["image_id"]]
    labels = metadata["dx"].map(CLASSES.index).to_numpy()
    return paths, labels


def describe_machine(num_images: int, args) -> dict:
    return {
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "num_images": num_images,
        "cached_epochs": args.epochs,
        "repeats": args.repeats,
        "pipeline_defaults": {"deterministic": PipelineConfig().deterministic,
                              "autotune": PipelineConfig().autotune},
        "load_average_start": os.getloadavg(),
    }


# --- measurements --------------------------------------------------------------------------


def measure_resolution(paths, labels, size, args) -> dict:
    """All figures for one (H, W)."""
    print(f"\n{size[0]}x{size[1]}", flush=True)
    geometric = PipelineConfig(image_size=size, augment=AugmentConfig.geometric())
    first, cached = [], []
    for _ in range(args.repeats):
        rates = time_epochs(build_dataset(paths, labels, config=geometric, training=True),
                            1 + args.epochs)
        first.append(rates[0])
        cached.append(float(np.mean(rates[1:])))
    plain = PipelineConfig(image_size=size)
    decode = [time_epochs(build_dataset(paths, labels, config=plain, training=True), 1)[0]
              for _ in range(args.repeats)]
    result = {
        "dermnet_first_epoch_img_s": max(first),
        "dermnet_cached_img_s": max(cached),
        "dermnet_decode_epoch_img_s": max(decode),
        "baseline_img_s": time_baseline(paths, labels, size, args.baseline_batches),
        "load_average_after": os.getloadavg(),  # includes this benchmark's own threads
    }
    if size == RESOLUTIONS[0]:
        paper = PipelineConfig(image_size=size, augment=AugmentConfig.paper())
        rates = time_epochs(build_dataset(paths, labels, config=paper, training=True),
                            1 + args.epochs)
        result["dermnet_paper_preset_cached_img_s"] = float(np.mean(rates[1:]))
    result["speedup_cached_vs_baseline"] = result["dermnet_cached_img_s"] / result["baseline_img_s"]
    return result


def time_epochs(dataset, epochs: int) -> list[float]:
    """Images/s of each full pass over `dataset`."""
    rates = []
    for epoch in range(epochs):
        start, count = time.perf_counter(), 0
        for _, labels in dataset:
            count += int(labels.shape[0])
        rates.append(count / (time.perf_counter() - start))
        print(f"  epoch {epoch}: {rates[-1]:8.1f} img/s", flush=True)
    return rates


def time_baseline(paths, labels, size, batches: int) -> float:
    """Images/s of the 2020-era Keras generator with the same geometric augmentation."""
    config = AugmentConfig.geometric()
    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=config.rotation,
        zoom_range=list(config.zoom),
        shear_range=config.shear,
        width_shift_range=config.translation,
        height_shift_range=config.translation,
        horizontal_flip=config.horizontal_flip,
        vertical_flip=config.vertical_flip,
        fill_mode=config.fill_mode,
    )
    frame = pd.DataFrame({"path": paths, "dx": [CLASSES[label] for label in labels]})
    iterator = generator.flow_from_dataframe(
        frame, x_col="path", y_col="dx", target_size=size, batch_size=32, seed=0
    )
    next(iterator)  # the first batch pays for start-up
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        count += len(next(iterator)[1])
    rate = count / (time.perf_counter() - start)
    print(f"  ImageDataGenerator: {rate:8.1f} img/s", flush=True)
    return rate


def measure_cache_memory(paths, labels) -> dict:
    """Memory of the uint8 cache per resolution, each measured in a fresh process so that
    memory freed by earlier measurements cannot be reused and hide the growth."""
    context = multiprocessing.get_context("spawn")
    results = {}
    for size in RESOLUTIONS:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            per_image = pool.submit(cache_growth_per_image, paths, labels, size).result()
        raw = size[0] * size[1] * 3
        results[f"{size[0]}x{size[1]}"] = {
            "raw_bytes_per_image": raw,
            "rss_growth_bytes_per_image": per_image,
            "full_set_images": FULL_SET,
            "full_set_raw_gb": raw * FULL_SET / 1e9,
            "full_set_rss_estimate_gb": per_image * FULL_SET / 1e9,
        }
    return results


def cache_growth_per_image(paths, labels, size) -> float:
    """RSS growth per image of one pass that fills a memory cache, after a short uncached
    warm-up pass that loads TensorFlow's kernels and thread pools."""
    warm_up = PipelineConfig(image_size=size, cache="none")
    time_epochs(build_dataset(paths[:64], labels[:64], config=warm_up, training=False), 1)
    before = resident_bytes()
    cached = build_dataset(paths, labels, config=PipelineConfig(image_size=size), training=False)
    time_epochs(cached, 1)
    return (resident_bytes() - before) / len(paths)


def resident_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# --- report --------------------------------------------------------------------------------


def print_table(results: dict) -> None:
    columns = ("dermnet_first_epoch_img_s", "dermnet_cached_img_s", "dermnet_decode_epoch_img_s",
               "baseline_img_s", "speedup_cached_vs_baseline")
    headers = ("first epoch", "cached", "decode epoch", "ImageDataGen", "speed-up")
    print(f"\n{'H x W':>8} " + " ".join(f"{header:>13}" for header in headers))
    for size in RESOLUTIONS:
        row = results[f"{size[0]}x{size[1]}"]
        print(f"{size[0]}x{size[1]:<4} " + " ".join(f"{row[key]:13.1f}" for key in columns))
    paper = results[f"{RESOLUTIONS[0][0]}x{RESOLUTIONS[0][1]}"]
    print(f"paper preset (224x300, cached): {paper['dermnet_paper_preset_cached_img_s']:.1f} img/s")
    for size, memory in results["cache_memory"].items():
        print(f"uint8 memory cache at {size}: {memory['rss_growth_bytes_per_image']:.0f} B/image "
              f"RSS growth (raw {memory['raw_bytes_per_image']}); full set of "
              f"{memory['full_set_images']}: ~{memory['full_set_rss_estimate_gb']:.2f} GB "
              f"(raw {memory['full_set_raw_gb']:.2f} GB)")
    meta = results["meta"]
    print(f"{meta['num_images']} images, TF {meta['tensorflow']}, {meta['cpu_count']} CPUs, "
          f"load average {meta['load_average_start']} -> {meta['load_average_end']}")


if __name__ == "__main__":
    main()
