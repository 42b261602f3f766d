"""The ``evaluate.py`` command line: one run's figures, comparisons, reader studies.

    evaluate.py RUN_DIR [--split test|val|fold|holdout] [--data-dir DIR] [--tta N] [--out DIR]
    evaluate.py RUN_DIR --external DATA_DIR [--tta N] [--out DIR]   another image bank
    evaluate.py compare RUN_DIR... [--by backbone,resolution,clinical] --out REPORT
    evaluate.py readers ANSWERS_CSV --truth METADATA_CSV [--model-run RUN_DIR] --out REPORT

Exit status: 0 on success, 1 when an input is unusable (the message names it), 2 on a
usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dermnet.progname import program_name

SUBCOMMANDS = ("compare", "readers")


def main(argv: list[str] | None = None) -> int:
    """Parse and run: ``compare`` and ``readers`` are sub-commands; anything else is the
    default command, one run's evaluation (``evaluate.py RUN_DIR``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_subcommand_parser() if argv and argv[0] in SUBCOMMANDS else make_parser()
    args = parser.parse_args(argv)
    return args.run(args)


def make_subcommand_parser() -> argparse.ArgumentParser:
    from dermnet.evaluation import reader_cli

    parser = argparse.ArgumentParser(prog=program_name("evaluate.py"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_compare_arguments(commands.add_parser("compare", help=COMPARE_HELP,
                                              description=COMPARE_HELP))
    reader_cli.add_arguments(commands.add_parser(
        "readers", help="human readers beside the model", description=reader_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def make_parser() -> argparse.ArgumentParser:
    from dermnet.evaluation.options import MAX_TTA, SPLITS

    parser = argparse.ArgumentParser(
        prog=program_name("evaluate.py"), description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished training run directory")
    scored = parser.add_mutually_exclusive_group()
    # No default here: argparse must see whether --split was given, to refuse it beside
    # --external; _evaluate reads a missing --split as "test".
    scored.add_argument("--split", choices=SPLITS,
                        help="test: the held-out test split (default); val or fold: the "
                             "run's validation fold; holdout: the source collections a "
                             "leave-one-source-out run never trained on")
    scored.add_argument("--external", type=Path, metavar="DATA_DIR",
                        help="score every image of ANOTHER image bank in the HAM10000 layout "
                             "(HAM10000_metadata.csv with image_id and dx at least; classes "
                             "a subset of the seven) into RUN_DIR/external-<name>/")
    parser.add_argument("--data-dir", type=Path,
                        help="the dataset, when it moved since training (default: the "
                             "run's own, or the phantom dataset)")
    parser.add_argument("--tta", type=int, default=1, metavar="N",
                        help=f"average over N fixed flips/rotations, 1-{MAX_TTA} (default 1)")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR for the "
                                                 "test split, RUN_DIR/evaluation-<split> for "
                                                 "the others, RUN_DIR/external-<name of "
                                                 "DATA_DIR> for --external)")
    parser.add_argument("--pair", action="append", metavar="POS:NEG",
                        help="binary task between two classes (repeatable; default mel:nv)")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="bootstrap resamples of the lesion-level intervals (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--no-runtime", action="store_true",
                        help="skip the runtime-per-image measurement")
    parser.add_argument("--no-lesion-focus", action="store_true",
                        help="skip the share of Grad-CAM energy inside the lesion (measured "
                             "by default when the data folder has lesion masks in masks/)")
    parser.add_argument("--lesion-focus-limit", type=int, metavar="N",
                        help="measure the lesion focus on N images drawn from the split, for "
                             "speed (default: all)")
    parser.set_defaults(run=_evaluate_any, parser=parser)
    return parser


COMPARE_HELP = "Evaluated runs side by side (the paper's Tables 2 and 3) with its tests."


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run=_compare)
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                        help="run directories already evaluated with evaluate.py RUN_DIR")
    parser.add_argument("--by", default="backbone,resolution,clinical",
                        help="factors defining a configuration (default: all three)")
    parser.add_argument("--out", type=Path, required=True, help="report folder")


def _evaluate_any(args: argparse.Namespace) -> int:
    if args.external is not None:
        return _evaluate_external(args, args.parser)
    return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from dermnet.evaluation.predictions import EvaluationError
    from dermnet.evaluation.run import DEFAULT_PAIRS, evaluate_run

    try:
        pairs = tuple(_parse_pair(text) for text in args.pair) if args.pair else DEFAULT_PAIRS
        evaluate_run(args.run_dir, args.split or "test", data_dir=args.data_dir, tta=args.tta,
                     out=args.out, pairs=pairs, n_resamples=args.resamples, seed=args.seed,
                     runtime=not args.no_runtime, lesion_focus=not args.no_lesion_focus,
                     lesion_focus_limit=args.lesion_focus_limit)
    except (EvaluationError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _evaluate_external(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # --data-dir and --pair describe the run's own data; on another bank they would be
    # silently meaningless, so they are usage errors.
    for option, value in (("--data-dir", args.data_dir), ("--pair", args.pair)):
        if value is not None:
            parser.error(f"argument {option}: not allowed with argument --external")
    from dermnet.evaluation.external import evaluate_external
    from dermnet.evaluation.predictions import EvaluationError

    try:
        evaluate_external(args.run_dir, args.external, tta=args.tta, out=args.out,
                          n_resamples=args.resamples, seed=args.seed,
                          runtime=not args.no_runtime)
    except (EvaluationError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _parse_pair(text: str) -> tuple[str, str]:
    from dermnet.data.vocabulary import CLASSES

    parts = text.lower().split(":")
    if len(parts) != 2 or not all(part in CLASSES for part in parts) or parts[0] == parts[1]:
        raise ValueError(f"--pair takes POSITIVE:NEGATIVE, two different classes of "
                         f"{', '.join(CLASSES)}; got {text!r}")
    return parts[0], parts[1]


def _compare(args: argparse.Namespace) -> int:
    from dermnet.evaluation.compare import CompareError, compare_runs, parse_factors

    try:
        compare_runs(args.run_dirs, parse_factors(args.by), args.out)
    except (CompareError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"\nwrote report.md, configurations.csv, tests.csv and the tables to {args.out}")
    return 0
