"""The GAN's command line: ``python -m gan COMMAND [options]`` (``--help`` lists them).

    python -m gan train --preset smoke --out runs/gan-smoke        # seconds on a CPU
    python -m gan train --preset phantom --out runs/gan-phantom    # ~13 min on 2 CPU cores, 32x32
    python -m gan train --preset paper --data-dir HAM10000 --out runs/gan-paper
    python -m gan generate runs/gan-phantom --num-images 700 --out runs/gan-images
    python -m gan assess runs/gan-phantom --classifier runs/classifier --real-data DIR

Options of ``train`` map onto the configuration (``gan/config.py``) in this order: the
preset (or ``--config FILE``), ``--schedule``, the shorthand options, then ``--set
section.field=value`` items, so ``--set`` wins. Without ``--data-dir`` the run uses the
SYNTHETIC phantom dataset. Run the same command again to resume an interrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dermnet.progname import program_name


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("python -m gan"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="grow the InfoGAN into a run directory")
    _add_train(train)
    train.set_defaults(run=_train)
    generate = commands.add_parser(
        "generate", help="write synthetic images as a dataset in the HAM10000 layout")
    _add_generate(generate)
    generate.set_defaults(run=_generate)
    assess = commands.add_parser(
        "assess", help="classify synthetic images, kernel distance, image grids")
    _add_assess(assess)
    assess.set_defaults(run=_assess)
    return parser


def _add_generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished GAN run")
    parser.add_argument("--num-images", type=int, required=True, help="images to write")
    parser.add_argument("--out", type=Path, required=True,
                        help="new (or empty) folder for the dataset")
    parser.add_argument("--class", dest="classes", action="append", metavar="DX",
                        help="class code to generate (mel, nv, ...); repeatable; default: "
                             "all seven in equal shares")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int,
                        help="side of the written images (default: the run's resolution)")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg",
                        help="image format (default jpg, quality 95, as HAM10000)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per generator call")


def _add_assess(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished GAN run")
    parser.add_argument("--classifier", type=Path, required=True,
                        help="a dermnet classifier run directory (or its model.keras)")
    parser.add_argument("--real-data", type=Path,
                        help="HAM10000-layout folder of real images (default: the GAN run's "
                             "own training data)")
    parser.add_argument("--per-class", type=int, default=100,
                        help="synthetic and real images per class (default 100)")
    parser.add_argument("--blocks", type=int, default=10,
                        help="disjoint blocks for the kernel distance's error (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, help="report folder (default RUN_DIR/assessment)")


def _add_train(parser: argparse.ArgumentParser) -> None:
    from gan.config import PRESETS
    from gan.schedule import SCHEDULE_PRESETS

    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="starting configuration (default: paper)")
    parser.add_argument("--config", type=Path, help="repeat a run: start from its config.json")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override any config field; repeatable")
    parser.add_argument("--schedule", choices=sorted(SCHEDULE_PRESETS),
                        help="replace the preset's growth schedule by a named one")
    parser.add_argument("--data-dir", help="HAM10000 folder (default: the phantom dataset)")
    parser.add_argument("--resolution", type=int,
                        help="final resolution (sets network. and schedule.final_resolution)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--strategy", help="auto, mirrored, one_device or default")
    parser.add_argument("--deterministic", action="store_true", default=None,
                        help="TensorFlow op determinism, no Grappler rewrites "
                             "(bit-exact resumes on CPU)")
    parser.add_argument("--clinical", action="store_true", default=None,
                        help="condition on age, sex and site sampled from real rows of each "
                             "class (sets data.clinical and network.clinical_codes)")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished (or different) run in --out")


def build_config(args: argparse.Namespace):
    """The run's config from the parsed ``train`` options (see the module docstring)."""
    from gan.config import apply_overrides, check_gan_config, load_gan_config, make_gan_config
    from gan.schedule import make_schedule

    config = load_gan_config(args.config) if args.config else make_gan_config(args.preset)
    if args.schedule:
        config = dataclasses.replace(config, schedule=make_schedule(args.schedule))
    return check_gan_config(apply_overrides(config, _shorthand_overrides(args) + args.set))


def _shorthand_overrides(args: argparse.Namespace) -> list[str]:
    from gan.clinical import CLINICAL_CODES

    pairs = {"data.data_dir": args.data_dir, "network.final_resolution": args.resolution,
             "schedule.final_resolution": args.resolution, "training.seed": args.seed,
             "training.strategy": args.strategy, "training.deterministic": args.deterministic,
             "data.clinical": args.clinical,
             "network.clinical_codes": CLINICAL_CODES if args.clinical else None}
    return [f"{key}={value}" for key, value in pairs.items() if value is not None]


def _train(args: argparse.Namespace) -> int:
    from gan.train import train_gan

    train_gan(build_config(args), args.out, overwrite=args.overwrite)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from dermnet.data.vocabulary import CLASSES
    from gan.generate import load_gan_run, parse_classes, write_synthetic_dataset

    classes = parse_classes(args.classes)  # before the (slow) model load
    run = load_gan_run(args.run_dir)
    out = write_synthetic_dataset(run, args.out, args.num_images, classes, seed=args.seed,
                                  size=args.size, image_format=args.format,
                                  batch_size=args.batch_size,
                                  log=lambda line: print(line, flush=True))
    names = ", ".join(CLASSES[index] for index in classes)
    print(f"wrote {args.num_images} synthetic images ({names}) to {out}; check it with "
          f"python -m dermnet.data check {out}")
    return 0


def _assess(args: argparse.Namespace) -> int:
    from gan.assess import assess_run, check_assess_inputs, format_report
    from gan.generate import load_gan_run

    check_assess_inputs(args.run_dir, args.classifier, args.real_data)
    real_data = args.real_data
    if real_data is None:  # the run's own training data (the phantom set, if it used one)
        from dermnet.runs.ham10000 import resolve_data_dir
        from gan.config import load_gan_config

        real_data = resolve_data_dir(load_gan_config(args.run_dir / "config.json"), print)
    run = load_gan_run(args.run_dir)
    out = args.out or args.run_dir / "assessment"
    result = assess_run(run, args.classifier, real_data, out, per_class=args.per_class,
                        blocks=args.blocks, seed=args.seed)
    print(format_report(result))
    print(f"report: {out / 'report.md'}; grids: {out / 'grids'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
