"""``make demo``: the first study's question, on the built-in SYNTHETIC phantom dataset.

Generates the phantom dataset (once), validates it with the checks real data get, trains the
``demo`` preset (a small MobileNet, a few minutes on a CPU) without and with clinical data,
evaluates both on the held-out test split (every figure with its 95% interval, plots),
compares them as the first study's Table 3 does (plus a paired test on the same images), and
says where the runs, reports and TensorBoard logs are.
The figures are about synthetic images: they show the machinery, not medicine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def run_demo(out_dir: Path, overwrite: bool = False) -> None:
    from dermnet.config import make_config
    from dermnet.data.ham10000 import format_summary, load_ham10000
    from dermnet.evaluation.compare import compare_runs
    from dermnet.evaluation.run import evaluate_run
    from dermnet.runs.ham10000 import resolve_data_dir
    from dermnet.training.run import train_and_evaluate

    config = make_config("demo")
    _section("The SYNTHETIC phantom dataset, checked like a real HAM10000 release")
    print(format_summary(load_ham10000(resolve_data_dir(config))))
    run_dirs = []
    for clinical in (False, True):
        name = "clinical" if clinical else "image-only"
        run_dir = out_dir / "runs" / name
        _section(f"Training {config.model.backbone}, {name}, into {run_dir}")
        run_config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                          clinical=clinical))
        if not overwrite and _finished_with(run_dir, run_config):
            print(f"{run_dir}: already finished, reusing it (--overwrite, or DEMO_DIR=... "
                  "for make demo, trains anew)")
        else:
            train_and_evaluate(run_config, run_dir, overwrite=overwrite)
        run_dirs.append(run_dir)
    for run_dir in run_dirs:
        _section(f"Evaluating {run_dir} on its held-out test split (SYNTHETIC data)")
        evaluate_run(run_dir)
    _section("Does clinical data help? (the first study's Table 3 question, on SYNTHETIC data)")
    compare_runs(run_dirs, out=out_dir / "report")
    print(f"\nRun directories: {out_dir / 'runs'}/{{image-only,clinical}} (metrics.json, "
          "predictions.csv, per_class.md, confusion_matrix.png, roc.png)")
    print(f"Comparison:      {out_dir / 'report'}/report.md")
    print(f"TensorBoard:     tensorboard --logdir {out_dir / 'runs'}")


def _finished_with(run_dir: Path, config) -> bool:
    from dermnet.config import load_config

    try:
        return (run_dir / "finished.json").exists() and load_config(
            run_dir / "config.json") == config
    except (OSError, ValueError):
        return False


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
    from dermnet.quiet import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's C++ start-up lines hidden; --verbose shows them
    sys.exit(main())
