"""Benchmark: the progressive InfoGAN's training and sampling speed at every resolution.

For each resolution of a preset's schedule, the stable stage's InfoGAN (critic with Q head,
generator, EMA) trains on a fixed batch of real-range images with labels, as in
``python -m gan train``: ``--warmup`` steps (tracing) then ``--steps`` timed ones, repeated
``--rounds`` times (the best round is kept: the least disturbed by other processes). Then
the average generator samples ``--sample-batch`` images per call, timed the same way.
Training images/s count real images; each step also generates and scores as many fakes
(and the gradient penalty back-propagates through the critic twice).

    python bench/gan.py [--preset phantom] [--steps 20] [--rounds 3]
        [--out bench/results/gan.json]

Runs under TensorFlow (the training step uses tf.GradientTape and tf.distribute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure_resolution(config, resolution: int, args) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from gan.model import GanNetworks, make_grid_codes
    from gan.train import compile_stage_model

    batch = config.schedule.batch_sizes[resolution]
    keras.utils.set_random_seed(0)
    networks = GanNetworks(config.network)
    model = networks.build_stage(resolution, fade=False, seed=0)
    compile_stage_model(model, config)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, resolution, resolution, 3)).astype("float32")
    labels = np.eye(config.network.num_classes, dtype="float32")[rng.integers(0, 7, batch)]
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(dataset, epochs=1, steps_per_epoch=args.warmup, shuffle=False, verbose=0)
    train_times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=args.steps, shuffle=False, verbose=0)
        train_times.append(time.perf_counter() - start)
    codes = make_grid_codes(config.network, args.sample_batch // config.network.num_classes)
    sampler = tf.function(lambda inputs: model.average_generator(inputs, training=False))
    inputs = codes | {"alpha": np.ones((len(codes["noise"]), 1), "float32")}
    sampler(inputs)
    sample_times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.sample_calls):
            sampler(inputs).numpy()
        sample_times.append(time.perf_counter() - start)
    sampled = len(codes["noise"]) * args.sample_calls
    return {"resolution": resolution, "batch_size": batch,
            "train_img_s": batch * args.steps / min(train_times),
            "train_steps_s": args.steps / min(train_times),
            "sample_img_s": sampled / min(sample_times),
            "sample_batch": len(codes["noise"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="phantom")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample-batch", type=int, default=63)
    parser.add_argument("--sample-calls", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gan.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from gan.config import make_gan_config

    config = make_gan_config(args.preset)
    rows = []
    for resolution in config.schedule.resolutions:
        row = measure_resolution(config, resolution, args)
        rows.append(row)
        print(f"{resolution:>4}x{resolution:<4} batch {row['batch_size']:>3}: train "
              f"{row['train_img_s']:8.1f} img/s ({row['train_steps_s']:.1f} steps/s), "
              f"sample {row['sample_img_s']:8.1f} img/s", flush=True)
    result = {"preset": args.preset, "rows": rows, "steps": args.steps, "rounds": args.rounds,
              "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "tensorflow": tf.__version__, "gpus": len(tf.config.list_physical_devices("GPU"))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
