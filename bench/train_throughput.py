"""Benchmark: is the input pipeline ever the training bottleneck? And what does
MirroredStrategy cost?

In one run, on phantom 600x450 JPEGs:
  1. training images/s of the classifier fed by train.py's real input pipeline
     (``dermnet.runs.datasets.make_training_dataset``: decode, uint8 cache, shuffle, the
     config's augmentation), and of the same model fed from in-memory tensors
     (pre-decoded images, no augmentation); the ratio shows the pipeline's cost;
  2. the in-memory figure under MirroredStrategy over two logical CPU devices against the
     default strategy, each in a fresh process (logical devices must be set before
     TensorFlow starts).

    python bench/train_throughput.py [--backbone mobilenet] [--resolution 224x300]
        [--images 512] [--epochs 3] [--batch-size 32] [--out bench/results/train_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_config(args):
    from dermnet.config import apply_overrides, make_config

    return apply_overrides(make_config("default"), [
        f"model.backbone={args.backbone}", "model.weights=none",
        f"data.image_size={args.resolution}", f"data.batch_size={args.batch_size}",
        f"data.phantom_images={args.images}", "data.augment.blur_probability=0",
        "data.augment.jpeg_probability=0", f"training.epochs={args.epochs}",
        "training.warmup_epochs=0", "training.freeze_epochs=0",
    ])


def timed_fit(model, dataset, steps: int, epochs: int) -> float:
    """Images/s over ``epochs`` epochs after one warm-up epoch (tracing, cache filling)."""
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0)
    return steps * epochs / (time.perf_counter() - start)


def measure_pipeline(args) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from dermnet.data.pipeline import load_image
    from dermnet.runs.datasets import make_training_dataset
    from dermnet.runs.tasks import prepare_run_data

    config = make_config(args)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = prepare_run_data(config, workdir, log=lambda message: None)
    batch = config.data.batch_size
    steps = data.num_training // batch
    real = make_training_dataset(data, config, 0, args.epochs * 2 + 2, batch)
    images = np.stack([load_image(path, config.data.image_size).numpy()
                       for path in data.training["path"]])
    labels = data.training["label"].to_numpy()
    memory = tf.data.Dataset.from_tensor_slices(({"image": images}, labels)).repeat()
    memory = memory.batch(batch).prefetch(tf.data.AUTOTUNE)
    rates = {}
    for name, dataset in (("in_memory", memory), ("pipeline", real)):
        keras.utils.set_random_seed(0)
        model = data.build_model(config)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      jit_compile=False)
        rates[name] = timed_fit(model, dataset, steps, args.epochs) * batch
    return {"pipeline_img_s": rates["pipeline"], "in_memory_img_s": rates["in_memory"],
            "ratio": rates["pipeline"] / rates["in_memory"], "training_images": len(labels)}


def measure_strategy(args) -> dict:
    """In-memory training images/s under ``args.strategy`` (run in its own process)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from dermnet.models.classifier import build_classifier
    from dermnet.runs.strategy import make_strategy

    strategy = make_strategy(args.strategy)
    height, width = (int(side) for side in args.resolution.split("x"))
    count = args.batch_size * 8
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    labels = rng.integers(0, 7, count)
    dataset = tf.data.Dataset.from_tensor_slices(({"image": images}, labels)).repeat()
    dataset = dataset.batch(args.batch_size).prefetch(tf.data.AUTOTUNE)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_classifier(args.backbone, (height, width), 7)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      jit_compile=False)
    rate = timed_fit(model, dataset, 8, args.epochs) * args.batch_size
    return {"strategy": args.strategy, "replicas": strategy.num_replicas_in_sync,
            "img_s": rate}


def run_strategy_process(args, strategy: str, logical_cpus: str) -> dict:
    environment = os.environ | {"DERMNET_LOGICAL_CPUS": logical_cpus,
                                "TF_CPP_MIN_LOG_LEVEL": "2"}
    if not logical_cpus:
        environment.pop("DERMNET_LOGICAL_CPUS")
    command = [sys.executable, __file__, "--measure-strategy", strategy,
               "--backbone", args.backbone, "--resolution", args.resolution,
               "--batch-size", str(args.batch_size), "--epochs", str(args.epochs)]
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--resolution", default="224x300", help="HxW")
    parser.add_argument("--images", type=int, default=512, help="phantom images")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", default="/tmp/dermnet-bench-train")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/train_throughput.json")
    parser.add_argument("--measure-strategy", dest="strategy", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.strategy:
        print(json.dumps(measure_strategy(args)))
        return 0
    report = {"settings": {key: str(value) for key, value in vars(args).items()},
              "load_average_start": os.getloadavg()}
    report["pipeline"] = measure_pipeline(args)
    single = run_strategy_process(args, "default", "")
    mirrored = run_strategy_process(args, "mirrored", "2")
    report["strategy"] = {"default": single, "mirrored_2_logical_cpus": mirrored,
                          "mirrored_over_default": mirrored["img_s"] / single["img_s"]}
    report["load_average_end"] = os.getloadavg()
    pipeline = report["pipeline"]
    print(f"{args.backbone} {args.resolution}, batch {args.batch_size}:")
    print(f"  real input pipeline   {pipeline['pipeline_img_s']:8.1f} img/s")
    print(f"  in-memory tensors     {pipeline['in_memory_img_s']:8.1f} img/s"
          f"   ratio {pipeline['ratio']:.3f}")
    print(f"  default strategy      {single['img_s']:8.1f} img/s (in memory)")
    print(f"  MirroredStrategy x2   {mirrored['img_s']:8.1f} img/s"
          f"   ratio {report['strategy']['mirrored_over_default']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
