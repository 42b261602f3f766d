"""The ``evaluate.py readers`` command line: score human readers beside the model.

    evaluate.py readers ANSWERS_CSV --truth METADATA_CSV [--model-run RUN_DIR |
        --model-predictions CSV] [--time-limit SECONDS] --out REPORT_DIR

ANSWERS_CSV has columns reader_id,image_id,diagnosis[,assisted][,seconds]. The report
(readers.json, readers.md, readers.csv) is written only when every input is valid; its
Markdown is printed. Exit status: 0 on success, 1 when an input is invalid, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PREDICTIONS_FILENAME = "predictions.csv"  # written into a run directory by evaluate.py


def main(argv: list[str] | None = None) -> int:
    """``evaluate.py readers ARGS``: parse ``argv`` and run."""
    parser = argparse.ArgumentParser(prog="evaluate.py readers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    # Imported once the arguments are good (scipy takes seconds): --help answers at once.
    from dermnet.evaluation.reader_report import format_markdown, save_reader_report
    from dermnet.evaluation.reader_study import (
        ReaderStudyError,
        compute_reader_study,
        load_reader_study,
    )

    model_csv = args.model_predictions
    if args.model_run is not None:
        model_csv = args.model_run / PREDICTIONS_FILENAME
    try:
        study = load_reader_study(args.answers_csv, args.truth, model_csv, args.time_limit)
    except ReaderStudyError as error:
        print(f"error: {len(error.problems)} problem(s); no report written:", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    results = compute_reader_study(study, confidence=args.confidence,
                                   n_resamples=args.resamples, seed=args.seed)
    try:
        save_reader_report(results, args.out)
    except OSError as error:
        print(f"error: cannot write the report to {args.out}: {error}", file=sys.stderr)
        return 1
    print(format_markdown(results))
    print(f"\nwrote readers.json, readers.md and readers.csv to {args.out}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run=run)
    parser.add_argument("answers_csv", type=Path,
                        help="readers' answers: reader_id,image_id,diagnosis[,assisted][,seconds]")
    parser.add_argument("--truth", type=Path, required=True,
                        help="HAM10000-style metadata CSV giving each image's dx")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-run", type=Path,
                       help=f"run directory holding {PREDICTIONS_FILENAME} (from evaluate.py)")
    model.add_argument("--model-predictions", type=Path,
                       help="ISIC-format CSV: image,MEL,NV,BCC,AKIEC,BKL,DF,VASC")
    parser.add_argument("--time-limit", type=_positive_float, metavar="SECONDS",
                        help="score only answers given within this many seconds "
                             "(the paper's timed condition: 45)")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--confidence", type=_probability, default=0.95,
                        help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--resamples", type=_positive_int, default=2000,
                        help="bootstrap resamples of the pooled intervals (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(text)


def _probability(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value
