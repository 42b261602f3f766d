"""The ``train.py`` command line: options -> config overrides -> ``train_and_evaluate``.

Every option is a shorthand for a ``--set`` override, applied in this order: the preset (or
``--config FILE``), then the shorthand options, then ``--set`` items, so ``--set`` wins.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from dermnet.config import PRESETS, Config, apply_overrides, load_config, make_config
from dermnet.progname import program_name
from dermnet.runs.tasks import DEFAULT_TASK, TASKS, get_task

RESOLUTION_NAMES = {"low": "224x300", "high": "450x600"}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("train.py"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="starting configuration (default: default, or photos with "
                             "--task clinical-photos)")
    parser.add_argument("--config", type=Path, help="repeat a run: start from its config.json")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override any config field; repeatable")
    parser.add_argument("--task", choices=tuple(TASKS), help=_task_help())
    parser.add_argument("--variant", choices=("p", "n", "ps", "ns"),
                        help="clinical photos: VGG16-P, -N, -PS or -NS")
    parser.add_argument("--crop-dir", help="clinical photos: the skin-cropped copy written by "
                                           "python -m preprocess crop DATA_DIR CROP_DIR")
    parser.add_argument("--balanced", action="store_true", default=None,
                        help="oversample minority classes of the training split")
    parser.add_argument("--data-dir", help="dataset folder (default: the task's phantom data)")
    parser.add_argument("--holdout-source", metavar="NAME[,NAME]",
                        help="leave-one-source-out: hold out these source collections (the "
                             "metadata's `dataset` column, e.g. rosendahl) as the `holdout` "
                             "split, never trained on")
    parser.add_argument("--sources-csv", metavar="CSV",
                        help="metadata with image_id,dataset columns for a data folder whose "
                             "own metadata lacks the source collection")
    parser.add_argument("--backbone", help="one of the registered backbones")
    parser.add_argument("--resolution", help="low (224x300), high (450x600) or HxW")
    parser.add_argument("--clinical", action=argparse.BooleanOptionalAction, default=None,
                        help="use age, sex and site through the clinical branch")
    folds = parser.add_mutually_exclusive_group()
    folds.add_argument("--fold", type=int, help="validation fold of this run (0-based)")
    folds.add_argument("--all-folds", action="store_true",
                       help="run every fold, into OUT/fold-K")
    parser.add_argument("--weights", help="imagenet, none, or a weights file")
    parser.add_argument("--epochs", type=int, help="total epochs")
    parser.add_argument("--batch-size", type=int, help="batch size per replica")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--strategy", help="auto, mirrored, multiworker, one_device, default")
    parser.add_argument("--mixed-precision", action="store_true", default=None,
                        help="mixed_float16 compute (GPUs)")
    parser.add_argument("--jit", action="store_true", default=None, help="XLA-compile steps")
    parser.add_argument("--deterministic", action="store_true", default=None,
                        help="TensorFlow op determinism, no Grappler rewrites "
                             "(bit-exact repeats on CPU)")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished (or different) run in --out")
    parser.add_argument("--grid", choices=("paper",), help="run a grid of runs under --out")
    parser.add_argument("--print-commands", action="store_true",
                        help="with --grid: only print the grid's commands, one per line")
    return parser


def _task_help() -> str:
    return "; ".join(f"{task.name}: {task.summary} (preset {task.default_preset} unless "
                     "--preset is given)" for task in TASKS.values()) + f"; default {DEFAULT_TASK}"


def build_config(args: argparse.Namespace) -> Config:
    """The run's config from the parsed options (see the module docstring for the order)."""
    preset = args.preset or get_task(args.task or DEFAULT_TASK).default_preset
    config = load_config(args.config) if args.config else make_config(preset)
    return apply_overrides(config, _shorthand_overrides(args) + list(args.set))


def _shorthand_overrides(args: argparse.Namespace) -> list[str]:
    pairs = {
        "data.data_dir": args.data_dir, "model.backbone": args.backbone,
        "data.image_size": RESOLUTION_NAMES.get(args.resolution, args.resolution),
        "data.clinical": args.clinical, "data.fold": args.fold, "model.weights": args.weights,
        "training.epochs": args.epochs, "data.batch_size": args.batch_size,
        "training.learning_rate": args.learning_rate, "training.seed": args.seed,
        "training.strategy": args.strategy, "training.mixed_precision": args.mixed_precision,
        "training.jit": args.jit, "training.deterministic": args.deterministic,
        "data.task": args.task, "model.variant": args.variant, "data.crop_dir": args.crop_dir,
        "data.sampling": "balanced" if args.balanced else None,
        "data.holdout_sources": args.holdout_source, "data.sources_csv": args.sources_csv,
    }
    return [f"{key}={value}" for key, value in pairs.items() if value is not None]


def default_out(config: Config) -> Path:
    return get_task(config.data.task).default_out(config)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.grid:
            return _run_grid(args)
        config = build_config(args)
        if args.all_folds:
            return _run_all_folds(config, args)
        return _train(config, args.out or default_out(config), args.overwrite)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _train(config: Config, out: Path, overwrite: bool) -> int:
    from dermnet.training.run import train_and_evaluate

    train_and_evaluate(config, out, overwrite=overwrite)
    return 0


def _run_all_folds(config: Config, args: argparse.Namespace) -> int:
    import dataclasses

    root = args.out or default_out(config).with_name(default_out(config).name[:-len("-fold0")])
    for fold in range(config.data.folds):
        fold_config = dataclasses.replace(config, data=dataclasses.replace(config.data, fold=fold))
        _train(fold_config, root / f"fold-{fold}", args.overwrite)
    return 0


def _run_grid(args: argparse.Namespace) -> int:
    from dermnet.training.grid import make_grid

    if args.out is None:
        raise ValueError("--grid needs --out (the folder that will hold every run)")
    preset = args.preset if args.preset not in (None, "default") else args.grid
    extra = tuple(item for pair in (("--set", value) for value in args.set) for item in pair)
    if args.data_dir:
        extra += ("--data-dir", args.data_dir)
    entries = make_grid(args.grid, args.out)
    if args.print_commands:
        print("\n".join(entry.command(preset, extra) for entry in entries))
        return 0
    failures = 0
    for index, entry in enumerate(entries, start=1):
        if (entry.out / "finished.json").exists():
            print(f"[{index}/{len(entries)}] done already: {entry.out}")
            continue
        print(f"[{index}/{len(entries)}] {entry.command(preset, extra)}", flush=True)
        # This interpreter's own package, wherever it is installed: no path to a script.
        command = [sys.executable, "-m", "dermnet.training", *entry.arguments(preset, extra)]
        failures += subprocess.run(command).returncode != 0
    print(f"grid {args.grid}: {len(entries) - failures} of {len(entries)} runs finished")
    return 1 if failures else 0
