"""``make demo``: the main job on the built-in phantom dataset, end to end on a CPU.

Generates the phantom dataset (once), validates it with the same checks as real data, splits
it by lesion, fits the clinical encoding on the training folds and streams one augmented
training epoch through the input pipeline. Everything it prints about data is SYNTHETIC.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def run_demo(out_dir: Path, num_images: int = 600, seed: int = 0) -> None:
    from dermnet.data import splits as splitting
    from dermnet.data.clinical import fit_clinical_encoder
    from dermnet.data.ham10000 import format_summary, load_ham10000
    from dermnet.data.phantom import write_phantom

    data_dir = out_dir / "phantom"
    if not (data_dir / "HAM10000_metadata.csv").is_file():
        _section(f"Generating {num_images} SYNTHETIC phantom images in {data_dir}")
        write_phantom(data_dir, num_images, seed=seed)
    _section("Checking the phantom dataset like a real HAM10000 release")
    dataset = load_ham10000(data_dir)
    print(format_summary(dataset))

    _section("Splitting by lesion, stratified by diagnosis")
    table = splitting.make_splits(dataset.frame, folds=5, test_fraction=0.17, seed=seed)
    splitting.save_splits(table, out_dir / "splits.csv")
    print(splitting.format_split_summary(table))

    training_ids, _ = splitting.select_fold(table, 0)
    training = dataset.frame.set_index("image_id").loc[training_ids].reset_index()
    encoder = fit_clinical_encoder(training)
    encoder.save_json(out_dir / "clinical_encoding.json")
    clinical = encoder.transform(training)
    print(f"\nclinical vector: {encoder.num_features} features, fitted on "
          f"{len(training)} training images (age mean {encoder.age_mean:.1f})")
    _stream_one_epoch(training, clinical)
    print(f"\nDemo outputs (splits, clinical encoding) are in {out_dir}/")


def _stream_one_epoch(training, clinical: np.ndarray) -> None:
    from dermnet.data.augment import AugmentConfig
    from dermnet.data.pipeline import PipelineConfig, build_dataset

    _section("Streaming one augmented training epoch at 224x300 (low resolution)")
    config = PipelineConfig(image_size=(224, 300), batch_size=32, augment=AugmentConfig.paper())
    dataset = build_dataset(training["path"].tolist(), training["label"].to_numpy(), clinical,
                            config=config, training=True)
    start, images, batch = time.perf_counter(), 0, None
    for batch in dataset:
        images += int(batch[1].shape[0])
    seconds = time.perf_counter() - start
    features, labels = batch
    print(f"batch: image {tuple(features['image'].shape)} {features['image'].dtype.name}, "
          f"clinical {tuple(features['clinical'].shape)}, labels {tuple(labels.shape)}")
    print(f"{images} images in {seconds:.1f} s ({images / seconds:.0f} images/s, "
          "first epoch: decode + augmentation)")


def _section(title: str) -> None:
    print(f"\n== {title}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dermnet.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo"), help="demo output folder")
    parser.add_argument("--num-images", type=int, default=600, help="phantom images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run_demo(args.out, args.num_images, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
