"""The GAN's command line: ``python -m gan COMMAND [options]`` (``--help`` lists them).

    python -m gan train --preset smoke --out runs/gan-smoke        # seconds on a CPU
    python -m gan train --preset phantom --out runs/gan-phantom    # ~15 min on a CPU, 32x32
    python -m gan train --preset paper --data-dir HAM10000 --out runs/gan-paper

Options of ``train`` map onto the configuration (``gan/config.py``) in this order: the
preset (or ``--config FILE``), ``--schedule``, the shorthand options, then ``--set
section.field=value`` items, so ``--set`` wins. Without ``--data-dir`` the run uses the
SYNTHETIC phantom dataset. Run the same command again to resume an interrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands.add_parser("train", help="grow the InfoGAN into a run directory"))
    return parser


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
                        help="TensorFlow op determinism (bit-exact resumes on CPU)")
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


COMMANDS = {"train": _train}


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # TensorFlow's C++ start-up chatter hides the progress lines; TF_CPP_MIN_LOG_LEVEL=0
    # shows it again.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
