"""Command line for the data layer: ``python -m dermnet.data {check,phantom,split} ...``.

    check DATA_DIR          validate a HAM10000-layout dataset and print its summary
    phantom OUT_DIR         write the synthetic phantom dataset (HAM10000 layout)
    split METADATA_CSV      write lesion-grouped, dx-stratified test/fold assignments

Clinical photos (study 2):

    photo-check PATH        validate a clinical photo dataset and print its summary
    photo-phantom OUT_DIR   write synthetic clinical photos (manifest layout)
    photo-split PATH        write patient-grouped, diagnosis-stratified train/val/test

Exit status: 0 on success, 1 when the data are invalid, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from dermnet.progname import program_name


def main(argv: list[str] | None = None) -> int:
    parser = _make_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:  # DatasetError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 1


def _make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("python -m dermnet.data"),
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="validate a dataset and print its summary")
    check.add_argument("data_dir", type=Path, help="folder holding HAM10000_metadata.csv")
    check.add_argument("--images", choices=("none", "header", "full"), default="header",
                       help="image check: existence only, JPEG/PNG structure (default), "
                            "or a full decode of every image")
    check.add_argument("--workers", type=int, default=None, help="parallel image checks")
    check.set_defaults(run=_run_check)

    phantom = commands.add_parser("phantom", help="write the synthetic phantom dataset")
    phantom.add_argument("out_dir", type=Path, help="new (or empty) output folder")
    phantom.add_argument("--num-images", type=int, default=1000, help="images to write")
    phantom.add_argument("--seed", type=int, default=0, help="random seed (output is "
                                                              "byte-identical per seed)")
    phantom.add_argument("--size", type=_parse_size, default=(450, 600), metavar="WxH",
                         help="image width x height, default 600x450 like HAM10000")
    phantom.add_argument("--balanced", action="store_true",
                         help="equal class counts instead of HAM10000's priors")
    phantom.set_defaults(run=_run_phantom)

    split = commands.add_parser("split", help="write test/fold assignments")
    split.add_argument("metadata_csv", type=Path, help="HAM10000_metadata.csv")
    split.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    split.add_argument("--test-fraction", type=float, default=0.17,
                       help="share of images held out for test (default 0.17, as the paper)")
    split.add_argument("--seed", type=int, default=0, help="random seed")
    split.add_argument("--by", choices=("lesion", "image"), default="lesion",
                       help="grouping unit; 'image' is the paper's leaky split")
    split.add_argument("--out", type=Path, required=True, help="output splits CSV")
    split.set_defaults(run=_run_split)
    _add_photo_commands(commands)
    return parser


def _add_photo_commands(commands) -> None:
    photos_help = "dataset folder (manifest.csv or <diagnosis>/<patient_id>/ folders) or CSV"
    diagnoses_help = "comma-separated diagnosis vocabulary (default: the study's five)"
    check = commands.add_parser("photo-check", help="validate a clinical photo dataset")
    check.add_argument("path", type=Path, help=photos_help)
    check.add_argument("--images", choices=("none", "header", "full"), default="header",
                       help="image check: existence only, JPEG/PNG structure (default), "
                            "or a full decode of every photo")
    check.add_argument("--workers", type=int, default=None, help="parallel image checks")
    check.add_argument("--diagnoses", type=_parse_names, default=None, help=diagnoses_help)
    check.set_defaults(run=_run_photo_check)

    phantom = commands.add_parser("photo-phantom", help="write synthetic clinical photos")
    phantom.add_argument("out_dir", type=Path, help="new (or empty) output folder")
    phantom.add_argument("--num-patients", type=int, default=200, help="patients to draw")
    phantom.add_argument("--photos-per-patient", type=_parse_range, default=(1, 4),
                         metavar="LOW-HIGH", help="photos per patient, default 1-4")
    phantom.add_argument("--seed", type=int, default=0, help="random seed (output is "
                                                              "byte-identical per seed)")
    phantom.add_argument("--size", type=_parse_size, default=(450, 600), metavar="WxH",
                         help="photo width x height, default 600x450")
    phantom.add_argument("--balanced", action="store_true",
                         help="equal patients per diagnosis instead of the study's shares")
    phantom.set_defaults(run=_run_photo_phantom)

    split = commands.add_parser("photo-split", help="write train/val/test assignments")
    split.add_argument("path", type=Path, help=photos_help)
    split.add_argument("--fractions", type=_parse_fractions, default=(0.8, 0.1, 0.1),
                       metavar="TRAIN,VAL,TEST", help="shares of photos, default 0.8,0.1,0.1")
    split.add_argument("--seed", type=int, default=0, help="random seed")
    split.add_argument("--diagnoses", type=_parse_names, default=None, help=diagnoses_help)
    split.add_argument("--out", type=Path, required=True, help="output splits CSV")
    split.set_defaults(run=_run_photo_split)


def _parse_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _parse_range(text: str) -> tuple[int, int]:
    """``1-4`` -> (1, 4); ``2`` -> (2, 2)."""
    try:
        low, _, high = text.partition("-")
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH such as 1-4, got {text!r}") from None


def _parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        fractions = tuple(float(part) for part in text.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST such as 0.8,0.1,0.1, "
                                         f"got {text!r}")
    return fractions


def _parse_size(text: str) -> tuple[int, int]:
    """``600x450`` (width x height) -> (height, width)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        message = f"expected WIDTHxHEIGHT such as 600x450, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"size {text} is too small (at least 16x16)")
    return height, width


def _run_check(args: argparse.Namespace) -> int:
    from dermnet.data.ham10000 import DatasetError, format_summary, load_ham10000

    start = time.perf_counter()
    try:
        dataset = load_ham10000(args.data_dir, check_images=args.images, workers=args.workers)
    except DatasetError as error:
        print(f"{args.data_dir}: INVALID, {len(error.problems)} problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        for warning in error.warnings:
            print(f"  warning: {warning}", file=sys.stderr)
        return 1
    print(format_summary(dataset))
    print(f"valid ({args.images} image check, {time.perf_counter() - start:.1f} s)")
    return 0


def _run_phantom(args: argparse.Namespace) -> int:
    from dermnet.data.phantom import write_phantom

    if args.num_images < 1:
        raise ValueError(f"--num-images must be positive, got {args.num_images}")
    start = time.perf_counter()
    out = write_phantom(args.out_dir, args.num_images, seed=args.seed, image_size=args.size,
                        balanced=args.balanced, progress=_print_progress)
    height, width = args.size
    print(f"\nwrote {args.num_images} SYNTHETIC phantom images ({width}x{height}) to {out} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _print_progress(done: int, total: int) -> None:
    if sys.stderr.isatty() or done == total or done % max(1, total // 10) == 0:
        print(f"\r  {done}/{total} images", end="", file=sys.stderr, flush=True)


def _run_split(args: argparse.Namespace) -> int:
    from dermnet.data import splits as splitting
    from dermnet.data.ham10000 import load_metadata

    frame, notes = load_metadata(args.metadata_csv)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = splitting.make_splits(frame, folds=args.folds, test_fraction=args.test_fraction,
                                      seed=args.seed, by=args.by)
    for warning in caught:
        print(f"WARNING: {warning.message}", file=sys.stderr)
    splitting.save_splits(table, args.out)
    print(splitting.format_split_summary(table))
    print(f"wrote {args.out}")
    return 0


def _run_photo_check(args: argparse.Namespace) -> int:
    from dermnet.data import clinical_photos as photos

    start = time.perf_counter()
    try:
        dataset = photos.load_photo_dataset(args.path, args.diagnoses or photos.PHOTO_DIAGNOSES,
                                            check_images=args.images, workers=args.workers)
    except photos.DatasetError as error:
        print(f"{args.path}: INVALID, {len(error.problems)} problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        for warning in error.warnings:
            print(f"  warning: {warning}", file=sys.stderr)
        return 1
    print(photos.format_photo_summary(dataset))
    print(f"valid ({args.images} image check, {time.perf_counter() - start:.1f} s)")
    return 0


def _run_photo_phantom(args: argparse.Namespace) -> int:
    from dermnet.data.photo_phantom import write_photo_phantom

    start = time.perf_counter()
    out = write_photo_phantom(args.out_dir, args.num_patients, args.photos_per_patient,
                              seed=args.seed, image_size=args.size, balanced=args.balanced,
                              progress=_print_photo_progress)
    photos = sum(1 for _ in (out / "images").iterdir())
    height, width = args.size
    seconds = time.perf_counter() - start
    print(f"\nwrote {photos} SYNTHETIC clinical photos ({width}x{height}) of "
          f"{args.num_patients} patients to {out} in {seconds:.1f} s "
          f"({photos / max(seconds, 1e-9):.0f} photos/s)")
    return 0


def _print_photo_progress(done: int, total: int) -> None:
    if sys.stderr.isatty() or done == total:  # workers report in uneven batches
        print(f"\r  {done}/{total} photos", end="", file=sys.stderr, flush=True)


def _run_photo_split(args: argparse.Namespace) -> int:
    from dermnet.data import clinical_photos as photos
    from dermnet.data import photo_splits

    dataset = photos.load_photo_dataset(args.path, args.diagnoses or photos.PHOTO_DIAGNOSES,
                                        check_images="none")
    for note in dataset.warnings:
        print(f"warning: {note}", file=sys.stderr)
    table = photo_splits.make_photo_splits(dataset.frame, fractions=args.fractions,
                                           seed=args.seed)
    photo_splits.save_photo_splits(table, args.out)
    print(photo_splits.format_photo_split_summary(table))
    print(f"wrote {args.out}")
    return 0
