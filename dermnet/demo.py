"""``make demo``: the first study's question, on the built-in SYNTHETIC phantom dataset.

Generates the phantom dataset (once), validates it with the checks real data get, trains the
``demo`` preset (a small MobileNet, a few minutes on a CPU) without and with clinical data,
scores both on the held-out test split, and says where the runs and TensorBoard logs are.
The figures are about synthetic images: they show the machinery, not medicine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np


def run_demo(out_dir: Path, overwrite: bool = False) -> None:
    from dermnet.config import make_config
    from dermnet.data.ham10000 import format_summary, load_ham10000
    from dermnet.training.data import resolve_data_dir
    from dermnet.training.run import train_and_evaluate

    config = make_config("demo")
    _section("The SYNTHETIC phantom dataset, checked like a real HAM10000 release")
    print(format_summary(load_ham10000(resolve_data_dir(config))))
    results = {}
    for clinical in (False, True):
        name = "clinical" if clinical else "image-only"
        run_dir = out_dir / "runs" / name
        _section(f"Training {config.model.backbone}, {name}, into {run_dir}")
        run_config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                          clinical=clinical))
        if overwrite or not (run_dir / "finished.json").exists():
            train_and_evaluate(run_config, run_dir, overwrite=overwrite)
        results[name] = score_test_split(run_dir)
    _section("Held-out test split (SYNTHETIC data)")
    print(_format_results(results))
    print(f"\nRun directories: {out_dir / 'runs'}/{{image-only,clinical}}")
    print(f"TensorBoard:     tensorboard --logdir {out_dir / 'runs'}")


def score_test_split(run_dir: Path) -> dict:
    """Accuracy and balanced accuracy of a finished run's model on its test split."""
    from sklearn.metrics import balanced_accuracy_score

    from dermnet.config import load_config
    from dermnet.training.data import make_evaluation_dataset, prepare_run_data

    config = load_config(run_dir / "config.json")
    data = prepare_run_data(config, run_dir, log=lambda message: None)
    from dermnet.models import load_model

    model = load_model(run_dir / "model.keras")
    dataset = make_evaluation_dataset(data.test, data, config, config.data.batch_size)
    predicted = np.argmax(model.predict(dataset, verbose=0), axis=1)
    truth = data.test["label"].to_numpy()
    return {"images": len(truth), "accuracy": float(np.mean(predicted == truth)),
            "balanced_accuracy": float(balanced_accuracy_score(truth, predicted))}


def _format_results(results: dict) -> str:
    lines = [f"{'model':<12}{'test images':>12}{'accuracy':>10}{'balanced acc.':>15}"]
    for name, scores in results.items():
        lines.append(f"{name:<12}{scores['images']:>12}{scores['accuracy']:>10.3f}"
                     f"{scores['balanced_accuracy']:>15.3f}")
    return "\n".join(lines)


def _section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dermnet.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo"), help="demo output folder")
    parser.add_argument("--overwrite", action="store_true", help="retrain finished runs")
    args = parser.parse_args(argv)
    run_demo(args.out, args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
