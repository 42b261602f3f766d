"""Command line of the non-skin filter: `python -m preprocess filter COMMAND ...`.

This module owns the arguments, console output and exit codes of the three commands; the
work itself is done by `preprocess.skin_filter` and `preprocess.skin_filter_data`.

    train DATA_DIR --out MODEL_DIR        train on DATA_DIR/skin and DATA_DIR/non_skin
    apply MODEL_DIR SRC_DIR               score every image under SRC_DIR, write a CSV
          [--report CSV] [--move-to DIR [--dry-run]] [--threshold T]
    make-demo-data OUT_DIR                synthetic skin/ and non_skin/ folders to try it on

Exit codes: 0 done; 1 a folder, model or training image is missing; 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from preprocess import skin_filter_data
from preprocess.skin_filter_config import TrainingConfig

if TYPE_CHECKING:  # Keras loads only when a command runs: --help answers at once
    from preprocess import skin_filter

PROG = "python -m preprocess filter"
DEMO_CHUNK = 256  # images generated at a time, so a large demo set needs little memory
JPEG_QUALITY = 90


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits with 2 on usage errors, 0 after --help
        return int(stop.code or 0)
    try:
        return args.run(args)
    except SystemExit as stop:  # a usage error found after parsing (--dry-run alone)
        return int(stop.code or 0)


DESCRIPTION = "Find non-skin photographs."


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The filter's commands (train, apply, make-demo-data) under ``parser``."""
    commands = parser.add_subparsers(dest="filter_command", required=True)
    add_train_parser(commands)
    add_apply_parser(commands)
    add_demo_parser(commands)


def add_train_parser(commands) -> None:
    defaults = TrainingConfig()
    train = commands.add_parser("train", help="train the filter on skin/ and non_skin/ folders")
    train.add_argument("data_dir", type=Path, help="folder holding skin/ and non_skin/")
    train.add_argument("--out", type=Path, required=True, help="folder for the saved filter")
    train.add_argument("--epochs", type=positive_int, default=defaults.epochs)
    train.add_argument("--image-size", type=positive_int, default=defaults.image_size[0],
                       help="side of the square model input (default %(default)s)")
    train.add_argument("--seed", type=non_negative_int, default=defaults.seed,
                       help="fixes the split, the augmentation and the initial weights")
    train.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    train.add_argument("--patience", type=positive_int, default=defaults.patience)
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    train.set_defaults(run=run_train)


def add_apply_parser(commands) -> None:
    apply = commands.add_parser("apply", help="score a folder, report and move non-skin")
    apply.add_argument("model_dir", type=Path, help="folder written by `train`")
    apply.add_argument("src_dir", type=Path, help="folder of photographs (searched recursively)")
    apply.add_argument("--report", type=Path, help="CSV to write (default: standard output)")
    apply.add_argument("--move-to", type=Path, help="move non-skin photographs here")
    apply.add_argument("--dry-run", action="store_true", help="print the moves, do not move")
    apply.add_argument("--threshold", type=probability,
                       help="skin if P(skin) >= T (default: the saved threshold)")
    apply.add_argument("--batch-size", type=positive_int, default=32)
    apply.set_defaults(run=run_apply, parser=apply)


def add_demo_parser(commands) -> None:
    demo = commands.add_parser("make-demo-data", help="write a synthetic training folder")
    demo.add_argument("out_dir", type=Path)
    demo.add_argument("--num-images", type=positive_int, default=200,
                      help="images per class (default %(default)s, as in the study)")
    demo.add_argument("--seed", type=non_negative_int, default=0)
    demo.add_argument("--image-size", type=positive_int, default=128)
    demo.set_defaults(run=run_make_demo)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# ---- train ------------------------------------------------------------------------------

def run_train(args: argparse.Namespace) -> int:
    from preprocess import skin_filter

    if not args.data_dir.is_dir():
        return fail(f"{args.data_dir} is not a folder")
    config = TrainingConfig(
        image_size=(args.image_size, args.image_size), epochs=args.epochs,
        batch_size=args.batch_size, patience=args.patience, seed=args.seed)
    try:
        images, labels, unreadable = skin_filter.load_training_folder(
            args.data_dir, config.image_size)
        for path in unreadable:
            print(f"unreadable, skipped: {path}", file=sys.stderr)
        print(f"{int(labels.sum())} skin and {int((1 - labels).sum())} non-skin images")
        model, figures = skin_filter.train_skin_filter(images, labels, config,
                                                       verbose=0 if args.quiet else 2)
    except (FileNotFoundError, ValueError) as error:
        return fail(str(error))
    skin_filter.save_skin_filter(model, args.out, skin_filter.make_metadata(config, figures))
    print(f"validation accuracy {figures['validation_accuracy']:.3f} on "
          f"{figures['num_validation']} images after {figures['epochs_run']} epochs; "
          f"saved {args.out / skin_filter.MODEL_FILENAME}")
    return 0


# ---- apply ------------------------------------------------------------------------------

def run_apply(args: argparse.Namespace) -> int:
    from preprocess import skin_filter

    if args.dry_run and not args.move_to:
        args.parser.error("--dry-run needs --move-to")
    if not args.src_dir.is_dir():
        return fail(f"{args.src_dir} is not a folder")
    try:
        loaded = skin_filter.load_skin_filter(args.model_dir, args.threshold)
    except FileNotFoundError as error:
        return fail(str(error))
    paths = skin_filter.list_images(args.src_dir, exclude=args.move_to)
    scores = skin_filter.score_files(loaded, paths, args.batch_size, progress=show_progress)
    write_report(scores, args)
    for score in scores:
        if score.decision == skin_filter.UNREADABLE:
            print(f"unreadable, left in place: {score.path}", file=sys.stderr)
    moved = {}
    if args.move_to:
        moved = skin_filter.move_non_skin(scores, args.src_dir, args.move_to, args.dry_run)
    print_summary(scores, moved, args.dry_run)
    return 0


def show_progress(done: int, total: int) -> None:
    end = "\r" if sys.stderr.isatty() and done < total else "\n"
    print(f"scored {done}/{total} images", end=end, file=sys.stderr, flush=True)


def write_report(scores: list[skin_filter.Score], args: argparse.Namespace) -> None:
    from preprocess import skin_filter

    if args.report is None:
        skin_filter.write_report(scores, args.src_dir, sys.stdout)
        return
    args.report.parent.mkdir(parents=True, exist_ok=True)
    with open(args.report, "w", newline="", encoding="utf-8") as stream:
        skin_filter.write_report(scores, args.src_dir, stream)


def print_summary(scores: list[skin_filter.Score], moved: dict, dry_run: bool) -> None:
    from preprocess import skin_filter

    counts = {name: 0 for name in (*skin_filter.CLASS_NAMES, skin_filter.UNREADABLE)}
    for score in scores:
        counts[score.decision] += 1
    line = ", ".join(f"{count} {name}" for name, count in counts.items())
    if moved:
        verb = "would move" if dry_run else "moved"
        line += f"; {verb} {moved['moved']}, kept {moved['kept_existing']} (target exists)"
    print(line, file=sys.stderr)


# ---- make-demo-data ---------------------------------------------------------------------

def run_make_demo(args: argparse.Namespace) -> int:
    makers = {"skin": skin_filter_data.make_synthetic_skin_images,
              "non_skin": skin_filter_data.make_synthetic_non_skin_images}
    for name, make in makers.items():
        folder = args.out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for start in range(0, args.num_images, DEMO_CHUNK):
            count = min(DEMO_CHUNK, args.num_images - start)
            images = make(count, args.seed, args.image_size, start=start)
            for offset, image in enumerate(images):
                save_jpeg(folder / f"{name}_{start + offset:05d}.jpg", image)
    print(f"wrote {args.num_images} skin and {args.num_images} non-skin images "
          f"to {args.out_dir} (synthetic)")
    return 0


def save_jpeg(path: Path, rgb) -> None:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"could not encode {path}")
    encoded.tofile(path)  # tofile, unlike imwrite, takes any path on every platform
