"""Classify skin-lesion images with a trained model: ``python predict.py RUN_DIR IMAGE...``.

    python predict.py runs/smoke lesion.jpg                     # ranked top 3 per image
    python predict.py runs/r50-clinical a.jpg b.png --age 45 --sex female --site back
    python predict.py runs/r50-clinical *.jpg --clinical-csv clinical.csv --json
    python predict.py runs/smoke lesion.jpg --gradcam heatmaps/ --gradcam-class mel

MODEL_OR_RUN_DIR is a run directory or a bare model.keras (a clinical model then needs the
run's clinical_encoding.json beside it). Exit status: 0 done, 1 a model, image or CSV file
cannot be used, 2 wrong usage (such as clinical data missing for a clinical model). Nothing
is printed to stdout unless every image was read and predicted.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from dermnet.data.vocabulary import CLASS_NAMES, CLASSES, LOCALIZATIONS, SEXES
from dermnet.progname import program_name

PROG = "predict.py"
CLINICAL_OPTIONS = ("age", "sex", "site")
CLINICAL_HELP = (f"age: a number from 0 to 120 or unknown; sex: {', '.join(SEXES)}; "
                 f"site: {', '.join(LOCALIZATIONS)}")


class UsageError(ValueError):
    """Options that do not fit together or do not fit the model (exit status 2)."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name(PROG), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL_OR_RUN_DIR", type=Path,
                        help="a run directory or a model.keras file")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="JPEG or PNG files")
    clinical = parser.add_argument_group(
        "clinical data", "for models trained with --clinical: either --age, --sex and --site\n"
        "for every image, or --clinical-csv; 'unknown' is allowed for each value")
    clinical.add_argument("--age", help="age in years, 0-120")
    clinical.add_argument("--sex", help=", ".join(SEXES))
    clinical.add_argument("--site", help=f"lesion localization: {', '.join(LOCALIZATIONS)}")
    clinical.add_argument("--clinical-csv", type=Path, metavar="FILE",
                          help="per-image values, columns image,age,sex,localization (image: "
                               "the path as given, its file name, or its name without extension)")
    parser.add_argument("--top-k", type=_top_k, default=3, metavar="K",
                        help="classes listed per image (default 3)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {image, probabilities, top_k, gradcam}")
    parser.add_argument("--gradcam", type=Path, metavar="OUT_DIR",
                        help="write a Grad-CAM heatmap overlay PNG per image into OUT_DIR")
    parser.add_argument("--gradcam-class", choices=CLASSES, metavar="CLASS",
                        help=f"class of the heatmap: {', '.join(CLASSES)} (default: each "
                             "image's top class)")
    return parser


def _top_k(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if not 1 <= value <= len(CLASSES):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {len(CLASSES)}")
    return value


def main(argv=None) -> int:
    """Run the command line; returns the exit status (argparse itself exits 2 on bad syntax)."""
    args = make_parser().parse_args(argv)
    # Imported only now, so --help and syntax errors answer without loading TensorFlow.
    from dermnet.inference.predict import ClinicalInputError, InputFileError

    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        try:
            output = run(args)
        except InputFileError as error:
            return _fail(error, 1)
        except OSError as error:  # writing a heatmap: a full disk, a read-only folder
            return _fail(error, 1)
        except (UsageError, ClinicalInputError) as error:
            return _fail(error, 2)
    print(output, end="")
    return 0


def run(args: argparse.Namespace) -> str:
    """Everything but printing: the text (or JSON) to print, or an exception."""
    from dermnet.inference import predict

    _check_options(args)
    predictor = predict.load_predictor(args.model)
    paths = [Path(image) for image in args.images]
    clinical = _clinical_rows(args, predictor, paths)
    inputs = predictor.make_inputs(predictor.read_images(paths), clinical)
    probabilities = predictor.predict_inputs(inputs)
    top = predict.compute_top_k(probabilities, args.top_k)
    gradcams = [(None, None)] * len(paths)
    if args.gradcam:
        classes = [predictor.class_names.index(args.gradcam_class) if args.gradcam_class
                   else int(row[0]) for row in top]
        gradcams = _write_gradcams(predictor, paths, inputs, classes, probabilities,
                                   args.gradcam)
    records = make_records(args.images, probabilities, top, predictor.class_names, gradcams,
                           predictor.describe_training_data())
    if args.json:
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    return f"model {args.model}: {predictor.describe_training_data()}\n\n" + format_records(
        records)


def _check_options(args: argparse.Namespace) -> None:
    given = [f"--{name}" for name in CLINICAL_OPTIONS if getattr(args, name) is not None]
    if given and args.clinical_csv:
        raise UsageError(f"give either --clinical-csv or {', '.join(given)}, not both")
    if args.gradcam_class and not args.gradcam:
        raise UsageError("--gradcam-class needs --gradcam OUT_DIR")
    if args.gradcam and args.gradcam.exists() and not args.gradcam.is_dir():
        raise UsageError(f"--gradcam OUT_DIR: {args.gradcam} exists and is not a folder")


def _clinical_rows(args, predictor, paths: list[Path]):
    """The clinical DataFrame for ``paths``, or None for an image-only model."""
    from dermnet.inference import predict

    values = [getattr(args, name) for name in CLINICAL_OPTIONS]
    given = args.clinical_csv is not None or any(value is not None for value in values)
    if not predictor.needs_clinical:
        if given:
            warnings.warn("this model uses no clinical data: --age/--sex/--site and "
                          "--clinical-csv are ignored", stacklevel=1)
        return None
    if args.clinical_csv is not None:
        return predict.read_clinical_csv(args.clinical_csv, paths)
    missing = [f"--{name}" for name, value in zip(CLINICAL_OPTIONS, values) if value is None]
    if len(missing) == len(CLINICAL_OPTIONS):
        raise UsageError("this model uses clinical data: give --age AGE --sex SEX --site SITE "
                         "(applied to every image) or --clinical-csv FILE (columns "
                         f"image,age,sex,localization); {CLINICAL_HELP}")
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (use 'unknown' when not known); "
                         f"{CLINICAL_HELP}")
    return predict.make_clinical_rows(len(paths), *values)


def _write_gradcams(predictor, paths: list[Path], inputs: dict, classes: list[int],
                    probabilities, out_dir: Path) -> list[tuple[str, bool]]:
    """(file, whether the map is empty) per image."""
    from dermnet.inference.gradcam import make_gradcam, save_gradcam

    gradcam = make_gradcam(predictor.model)
    names = predictor.class_names
    targets = make_gradcam_paths(paths, [names[index] for index in classes], out_dir)
    written = []
    for index, (path, target) in enumerate(zip(paths, targets)):
        one = {name: value[index:index + 1] for name, value in inputs.items()}
        row, chosen = probabilities[index], classes[index]
        caption = f"Grad-CAM for {names[chosen]} ({row[chosen]:.1%})"
        if int(row.argmax()) != chosen:
            caption += f"; top class {names[int(row.argmax())]} ({row.max():.1%})"
        empty = save_gradcam(gradcam, path, one, chosen, target, caption)
        written.append((str(target), empty))
    return written


def make_gradcam_paths(paths: list[Path], class_codes: list[str], out_dir: Path) -> list[Path]:
    """OUT_DIR/<name>_gradcam_<class>.png per image; a repeated name gets -2, -3, ..."""
    seen: dict[str, int] = {}
    targets = []
    for path, code in zip(paths, class_codes):
        seen[path.stem] = seen.get(path.stem, 0) + 1
        suffix = "" if seen[path.stem] == 1 else f"-{seen[path.stem]}"
        targets.append(out_dir / f"{path.stem}{suffix}_gradcam_{code}.png")
    return targets


def make_records(images: list[str], probabilities, top, class_names, gradcams,
                 trained_on: str = "") -> list[dict]:
    """One JSON-ready dict per image: image (as given), probabilities by class, the top-k
    classes with their names, the Grad-CAM file (or None) and whether its map is empty, and
    what the model was trained on
    (real or SYNTHETIC images, so no phantom model's output passes for a real one)."""
    records = []
    for image, row, ranked, (gradcam, empty) in zip(images, probabilities, top, gradcams):
        records.append({
            "image": str(image),
            "probabilities": {code: float(p) for code, p in zip(class_names, row)},
            "top_k": [{"class": class_names[index],
                       "name": CLASS_NAMES.get(class_names[index], class_names[index]),
                       "probability": float(row[index])} for index in ranked],
            "gradcam": gradcam,
            "gradcam_empty": empty,  # None without --gradcam
            "trained_on": trained_on,
        })
    return records


def format_records(records: list[dict]) -> str:
    """The readable listing: per image its ranked classes as percentages."""
    blocks = []
    for record in records:
        lines = [record["image"]]
        for rank, entry in enumerate(record["top_k"], start=1):
            lines.append(f"  {rank}. {entry['class']:<6}{entry['probability']:7.1%}  "
                         f"{entry['name']}")
        if record["gradcam"]:
            note = (" (EMPTY: no region of the image raises this class's score)"
                    if record["gradcam_empty"] else "")
            lines.append(f"  Grad-CAM: {record['gradcam']}{note}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _fail(error: Exception, status: int) -> int:
    problems = getattr(error, "problems", None)  # ImageReadError: one line per file
    lines = [f"{path}: {reason}" for path, reason in problems.items()] if problems \
        else [str(error)]
    for line in lines:
        print(f"{program_name(PROG)}: error: {line}", file=sys.stderr)
    return status


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{program_name(PROG)}: warning: {message}", file=sys.stderr)
