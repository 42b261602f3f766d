"""Benchmark: the eight classifiers against their bare Keras Applications networks.

For each backbone and resolution: parameters, build time, and inference and training
images/s of dermnet's classifier (pixel preprocessing layer + backbone + clinical branch +
head), and in the same run of the bare ``keras.applications`` network where one exists
(``include_top=False, pooling="avg"`` plus the same Dense softmax layer, so both can train on
the same loss). The ratio shows what dermnet's additions cost.

Uses ``keras`` only, so it runs under any backend: ``KERAS_BACKEND=jax python bench/models.py``
works on a machine without TensorFlow.

    python bench/models.py [--backbones resnet50,vgg16] [--resolutions low,high]
                           [--batch-size 8] [--steps 2] [--rounds 3]
                           [--out bench/results/models.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermnet.models.backbones import get_backbone, list_backbones  # noqa: E402
from dermnet.models.classifier import build_classifier  # noqa: E402

RESOLUTIONS = {"low": (224, 300), "high": (450, 600)}
CLINICAL_FEATURES = 20
NUM_CLASSES = 7
# Keras Applications constructors of the backbones that have one (the others are built here).
BARE = {
    "resnet50": "ResNet50", "resnet101": "ResNet101", "vgg16": "VGG16", "vgg19": "VGG19",
    "efficientnetb5": "EfficientNetB5", "mobilenet": "MobileNet",
}


def build_bare(name: str, shape: tuple[int, int]) -> keras.Model:
    constructor = getattr(keras.applications, BARE[name])
    network = constructor(include_top=False, weights=None, input_shape=(*shape, 3),
                          pooling="avg")
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(network.output)
    return keras.Model(network.input, outputs)


def prepare(build, inputs, labels) -> dict:
    """Build and compile a model, then warm it up (tracing / compilation) for both steps."""
    start = time.perf_counter()
    model = build()
    build_seconds = time.perf_counter() - start
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy")
    model.predict_on_batch(inputs)
    model.train_on_batch(inputs, labels)
    return {"model": model, "inputs": inputs, "labels": labels,
            "result": {"parameters": model.count_params(), "build_s": round(build_seconds, 2),
                       "inference_img_s": 0.0, "training_img_s": 0.0}}


def time_round(entry: dict, steps: int) -> None:
    """One timed round of inference and training steps; keeps the best rate seen."""
    model, inputs, labels = entry["model"], entry["inputs"], entry["labels"]
    batch, result = len(labels), entry["result"]
    for kind, step in (("inference_img_s", lambda: model.predict_on_batch(inputs)),
                       ("training_img_s", lambda: model.train_on_batch(inputs, labels))):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rate = batch * steps / (time.perf_counter() - start)
        result[kind] = round(max(result[kind], rate), 2)


def bench_one(name: str, resolution: str, batch: int, steps: int, rounds: int) -> dict:
    shape = RESOLUTIONS[resolution]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, *shape, 3)).astype("float32")
    clinical = rng.normal(size=(batch, CLINICAL_FEATURES)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, batch)
    entries = {"dermnet": prepare(
        lambda: build_classifier(name, shape, NUM_CLASSES, clinical_features=CLINICAL_FEATURES),
        {"image": images, "clinical": clinical}, labels)}
    if name in BARE:
        entries["bare"] = prepare(lambda: build_bare(name, shape), images, labels)
    # Interleaved rounds, best of each: background load hits both models alike.
    for _ in range(rounds):
        for entry in entries.values():
            time_round(entry, steps)
    row = {"backbone": name, "resolution": f"{shape[0]}x{shape[1]}"}
    row.update({key: entry["result"] for key, entry in entries.items()})
    if "bare" in row:
        for kind in ("inference", "training"):
            row[f"{kind}_ratio"] = round(row["dermnet"][f"{kind}_img_s"]
                                         / row["bare"][f"{kind}_img_s"], 3)
    keras.backend.clear_session()
    return row


def format_table(rows: list[dict]) -> str:
    header = (f"{'backbone':<15}{'size':>8}{'params':>13}{'build s':>9}{'infer/s':>9}"
              f"{'train/s':>9}{'bare inf/s':>11}{'bare tr/s':>10}{'ratio inf':>10}{'ratio tr':>9}")
    lines = [header, "-" * len(header)]
    for row in rows:
        ours, bare = row["dermnet"], row.get("bare", {})
        lines.append(
            f"{row['backbone']:<15}{row['resolution']:>8}{ours['parameters']:>13,}"
            f"{ours['build_s']:>9.1f}{ours['inference_img_s']:>9.1f}{ours['training_img_s']:>9.1f}"
            f"{bare.get('inference_img_s', float('nan')):>11.1f}"
            f"{bare.get('training_img_s', float('nan')):>10.1f}"
            f"{row.get('inference_ratio', float('nan')):>10.3f}"
            f"{row.get('training_ratio', float('nan')):>9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default=",".join(list_backbones()))
    parser.add_argument("--resolutions", default="low,high")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best kept")
    parser.add_argument("--out", type=Path, default=Path("bench/results/models.json"))
    args = parser.parse_args(argv)
    names = [get_backbone(name).name for name in args.backbones.split(",")]
    rows = []
    for name in names:
        for resolution in args.resolutions.split(","):
            rows.append(bench_one(name, resolution, args.batch_size, args.steps, args.rounds))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    report = {"backend": keras.backend.backend(), "keras": keras.__version__,
              "machine": platform.machine(), "cpus": os.cpu_count(),
              "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
              "load_average": os.getloadavg(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
