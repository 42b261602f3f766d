"""Clinical photo datasets (study 2): the reader and the binary tasks.

Owns everything between a folder of non-standardised clinical photographs and one validated
table of them; the patient split and the versions of the data are in `photo_splits`.
A dataset is given in one of three ways:

- a folder holding ``manifest.csv`` with columns ``image,patient_id,diagnosis`` (``image``
  relative to that folder; extra columns, such as the phantom's skin box, are carried along);
- a CSV file with those columns, ``image`` relative to the CSV's own folder;
- a folder of ``<diagnosis>/<patient_id>/<file>`` sub-folders (files may sit deeper below the
  patient folder, e.g. one folder per visit); ``image`` is then the path below the root.

Validation collects every problem (file, CSV line, field) before raising ``DatasetError``.
A patient with photos of several diagnoses is allowed (patients can have several diseases)
and noted. Photos must be JPEG or PNG; their headers are checked by ``jpeg_check``.
No TensorFlow here: light CLIs import this module.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from dermnet.data.ham10000 import DatasetError
from dermnet.data.jpeg_check import CHECK_MODES, check_image_files

# The study's five diagnoses; label = position in this tuple. Pass your own to extend.
PHOTO_DIAGNOSES = ("psoriasis", "eczema", "acne", "rosacea", "ctcl")
# Binary tasks (a, b): the sigmoid target is 0 for a and 1 for b. So eczema is the positive
# class of tasks 1 and 3 (the paper reports "identifying eczema" as sensitivity) and rosacea
# of task 2. An image counts only in the tasks naming its diagnosis: eczema in two.
TASKS = (("psoriasis", "eczema"), ("acne", "rosacea"), ("ctcl", "eczema"))
MASKED = -1.0  # target of an image in a task its diagnosis does not belong to

MANIFEST_FILENAME = "manifest.csv"
CROP_MANIFEST_FILENAME = "crop_manifest.csv"  # written by python -m preprocess crop into DST
MANIFEST_COLUMNS = ("image", "patient_id", "diagnosis")
FRAME_COLUMNS = ("image", "path", "patient_id", "diagnosis", "label")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # matched case-insensitively
SHOWN_EXAMPLES = 5  # examples quoted in one note


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames has no single truth value
class PhotoDataset:
    """A loaded, validated clinical photo dataset: one row of ``frame`` per photo."""

    frame: pd.DataFrame  # FRAME_COLUMNS, then any extra manifest columns
    root: Path  # absolute folder that ``image`` is relative to
    source: Path  # the manifest CSV, or ``root`` for the folder layout
    layout: str  # "manifest" or "folders"
    diagnoses: tuple[str, ...]  # vocabulary; label indexes it
    warnings: tuple[str, ...] = ()  # usable but worth a look (multi-diagnosis patients, ...)
    image_sizes: tuple[tuple[tuple[int, int], int], ...] = ()  # ((width, height), photos)


def load_photo_dataset(path, diagnoses=PHOTO_DIAGNOSES, check_images: str = "header",
                       workers: int | None = None) -> PhotoDataset:
    """Load and validate a dataset (layouts: module docstring); raise DatasetError.

    ``check_images``: "none" (files exist), "header" (JPEG/PNG structure) or "full" (decode).
    """
    if check_images not in CHECK_MODES:
        raise ValueError(f"check_images must be one of {CHECK_MODES}, not {check_images!r}")
    diagnoses = tuple(str(name).strip().lower() for name in diagnoses)
    path = Path(path).expanduser().absolute()
    if path.is_file() or (path / MANIFEST_FILENAME).is_file():
        source = path if path.is_file() else path / MANIFEST_FILENAME
        root, layout = source.parent, "manifest"
        frame, problems, warnings = _read_manifest(source)
    elif path.is_dir():
        source, root, layout = path, path, "folders"
        frame, problems, warnings = _scan_folders(path, diagnoses)
    else:
        raise DatasetError([f"{path}: no such file or folder"], path)
    problems += _check_rows(frame, diagnoses, source.name)
    paths, file_problems, sizes = _check_files(frame, root, check_images, workers)
    problems += file_problems
    warnings += _describe_mixed_patients(frame) + _describe_absent(frame, diagnoses)
    if problems:
        raise DatasetError(problems, source, warnings)
    return PhotoDataset(_public_frame(frame, paths, diagnoses), root, source, layout,
                        diagnoses, tuple(warnings), sizes)


def _public_frame(frame: pd.DataFrame, paths: list[str], diagnoses: tuple) -> pd.DataFrame:
    """FRAME_COLUMNS, then the manifest's extra columns (numbers when all are numbers)."""
    label = frame["diagnosis"].map({name: index for index, name in enumerate(diagnoses)})
    frame = frame.assign(path=paths, label=label.astype(np.int64)).drop(columns="where")
    extra = [column for column in frame.columns if column not in FRAME_COLUMNS]
    for column in extra:  # the phantom's skin box, for one, is numbers
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.notna().all():
            frame[column] = numbers
    return frame[[*FRAME_COLUMNS, *extra]].reset_index(drop=True)


# --- the two layouts: both give image, patient_id, diagnosis and ``where`` (for messages) ---


def _read_manifest(csv_path: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    frame, problems = read_table(csv_path, MANIFEST_COLUMNS)
    frame = frame.drop(columns=[name for name in ("path", "label") if name in frame.columns])
    return frame.assign(diagnosis=frame["diagnosis"].str.lower()), problems, []


def read_table(csv_path: Path, required) -> tuple[pd.DataFrame, list[str]]:
    """A CSV as stripped text, columns lower-cased, plus ``where`` ("name line N") per row.

    Raises DatasetError at once when no row can be checked (unreadable, required columns
    missing); rows of the wrong width are problems and left out.
    """
    name = csv_path.name
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a byte-order mark
        records = _parse_records(text)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError([f"{name}: cannot read ({error})"], csv_path) from error
    columns = [column.strip().lower() for column in records[0][1]] if records else []
    missing = [column for column in required if column not in columns]
    if missing:
        raise DatasetError([f"{name} line 1: missing column(s) {', '.join(missing)} "
                            f"(expected {','.join(required)})"], csv_path)
    body = records[1:]
    problems = [f"{name} line {line}: {len(row)} fields, the header has {len(columns)}"
                for line, row in body if len(row) != len(columns)]
    problems += [] if body else [f"{name}: no data rows after the header"]
    rows = [(line, row) for line, row in body if len(row) == len(columns)]
    frame = pd.DataFrame([row for _, row in rows], columns=columns, dtype=str)
    frame = frame.loc[:, ~frame.columns.duplicated()].apply(lambda column: column.str.strip())
    return frame.assign(where=[f"{name} line {line}" for line, _ in rows]), problems


def _parse_records(text: str) -> list[tuple[int, list[str]]]:
    """(line, fields) of each non-blank CSV row; a quoted field may span several lines."""
    reader, records, previous_end = csv.reader(io.StringIO(text), strict=True), [], 0
    try:
        for row in reader:
            if any(field.strip() for field in row):
                records.append((previous_end + 1, row))
            previous_end = reader.line_num
    except csv.Error as error:
        raise csv.Error(f"line {reader.line_num}: {error}") from error
    return records


def _scan_folders(root: Path, diagnoses: tuple) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Rows of a ``<diagnosis>/<patient_id>/<file>`` tree; misplaced files are problems."""
    rows, problems, warnings, ignored = [], [], [], []
    for entry in sorted(os.scandir(root), key=lambda entry: entry.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if _is_image_name(entry.name):
                problems.append(f"{entry.name}: photo outside a <diagnosis>/<patient_id>/ folder")
            continue
        if (Path(entry.path) / CROP_MANIFEST_FILENAME).is_file():
            warnings.append(f"{entry.name}/ holds {CROP_MANIFEST_FILENAME}: skipped as the "
                            "output of python -m preprocess crop")
            continue
        if entry.name.lower() not in diagnoses:
            problems.append(f"{entry.name}/: folder name {entry.name!r} is not a diagnosis "
                            f"(expected one of {', '.join(diagnoses)})")
            continue
        for relative in _image_files(root, Path(entry.path), ignored):
            parts = PurePosixPath(relative).parts
            if len(parts) < 3:
                problems.append(f"{relative}: photo directly in a diagnosis folder; "
                                "put it in a <patient_id>/ folder")
                continue
            rows.append((relative, parts[1], entry.name.lower(), relative))
    if not rows and not problems:
        problems.append(f"{root}: no {MANIFEST_FILENAME} and no photos in "
                        f"<diagnosis>/<patient_id>/ folders ({', '.join(diagnoses)})")
    if ignored:
        warnings.append(f"{len(ignored)} non-image file(s) ignored: "
                        f"{', '.join(ignored[:SHOWN_EXAMPLES])}")
    return pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "where"], dtype=str), problems, warnings


def _image_files(root: Path, folder: Path, ignored: list) -> list[str]:
    """Image paths (relative to ``root``, POSIX) under ``folder``; others go to ``ignored``."""
    found = []
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            relative = Path(current, name).relative_to(root).as_posix()
            if _is_image_name(name):
                found.append(relative)
            elif not name.startswith("."):  # .DS_Store and friends are noise, not news
                ignored.append(relative)
    return found


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


# --- checks --------------------------------------------------------------------------------


def _check_rows(frame: pd.DataFrame, diagnoses: tuple, name: str) -> list[str]:
    """Blank fields, unknown diagnoses, absolute paths (rows in order), then duplicates."""
    problems = []
    for row in frame.itertuples(index=False):
        blank = [field for field in MANIFEST_COLUMNS if getattr(row, field) == ""]
        problems += [f"{row.where}: {field} is blank" for field in blank]
        if row.diagnosis and row.diagnosis not in diagnoses:
            problems.append(f"{row.where}: diagnosis {row.diagnosis!r} is not one of "
                            f"{', '.join(diagnoses)}")
        if row.image and (row.image.startswith(("/", "\\")) or ":" in row.image[:3]):
            problems.append(f"{row.where}: image {row.image!r} is an absolute path; write it "
                            "relative to the manifest's folder")
    keys = frame["image"].map(image_key)
    repeated = frame[keys.duplicated(keep=False) & (frame["image"] != "")]
    for _, group in repeated.groupby(keys[repeated.index], sort=False):
        lines = ", ".join(where.rpartition(" ")[2] for where in group["where"])
        problems.append(f"{name}: image {group['image'].iloc[0]!r} appears on lines {lines}")
    return problems


def image_key(image: str) -> str:
    """``image`` with backslashes read as slashes and ``./``, ``x/..`` folded away: the key
    that matches one photo across tables (manifest, crop manifest, files on disk)."""
    return os.path.normpath(image.replace("\\", "/"))


def _check_files(frame: pd.DataFrame, root: Path, mode: str, workers):
    """Absolute paths, (where, problem) for missing or broken photos, and the size counts."""
    paths = [str(root / image_key(image)) if image else "" for image in frame["image"]]
    problems, present = [], []
    for path, image, where in zip(paths, frame["image"], frame["where"]):
        if path and not os.path.isfile(path):
            problems.append(f"{where}: image {image!r} not found (looked for {path})")
        elif path:
            present.append((path, f"{where}: image {image!r}"))
    if mode == "none" or not present:
        return paths, problems, ()
    outcomes = check_image_files([path for path, _ in present], mode, workers)
    problems += [f"{name}: {outcome}" for (_, name), outcome in zip(present, outcomes)
                 if isinstance(outcome, str)]
    sizes = Counter((info.width, info.height) for info in outcomes if not isinstance(info, str))
    return paths, problems, tuple(sizes.most_common())


def _describe_mixed_patients(frame: pd.DataFrame) -> list[str]:
    counts = frame.groupby(["patient_id", "diagnosis"]).size().unstack(fill_value=0)
    mixed = counts[(counts > 0).sum(axis=1) > 1]
    if mixed.empty:
        return []
    examples = [f"{patient} ({', '.join(f'{name} {n}' for name, n in row.items() if n)})"
                for patient, row in mixed.head(SHOWN_EXAMPLES).iterrows()]
    return [f"{len(mixed)} patient(s) have photos of more than one diagnosis (allowed; the "
            f"split places each by their most frequent one): {'; '.join(examples)}"]


def _describe_absent(frame: pd.DataFrame, diagnoses: tuple) -> list[str]:
    absent = [name for name in diagnoses if name not in set(frame["diagnosis"])]
    return [f"no photos of {', '.join(absent)}"] if absent and len(frame) else []


def format_photo_summary(dataset: PhotoDataset, tasks=TASKS) -> str:
    """Photos, patients, counts per diagnosis and per task, sizes and warnings."""
    frame = dataset.frame
    lines = [f"clinical photo dataset: {dataset.source} ({dataset.layout} layout)",
             f"  photos: {len(frame):,}    patients: {frame['patient_id'].nunique():,}",
             "  diagnosis     photos  patients"]
    for name in dataset.diagnoses:
        rows = frame[frame["diagnosis"] == name]
        lines.append(f"  {name:<12} {len(rows):>7,} {rows['patient_id'].nunique():>9,}")
    known = [task for task in tasks if set(task) <= set(dataset.diagnoses)]
    targets = compute_task_targets(frame["diagnosis"], known, allow_unused=True)
    lines.append(f"  {'task':<22}{'target 0':<17}   target 1")
    for index, (name, (negative, positive)) in enumerate(zip(task_names(known), known)):
        column = targets[:, index]
        lines.append(f"  {name:<22}{negative:<10}{int((column == 0).sum()):>7,}   "
                     f"{positive:<10}{int((column == 1).sum()):>7,}")
    sizes = ", ".join(f"{width}x{height} ({count:,})"
                      for (width, height), count in dataset.image_sizes[:SHOWN_EXAMPLES])
    lines.append(f"  image sizes: {sizes or 'not checked'}")
    lines.append(f"  warnings: {len(dataset.warnings)}")
    return "\n".join(lines + [f"    - {warning}" for warning in dataset.warnings])


# --- multi-task targets --------------------------------------------------------------------


def task_names(tasks=TASKS) -> list[str]:
    """``["psoriasis_vs_eczema", ...]``: output names of the task heads, in task order."""
    return [f"{negative}_vs_{positive}" for negative, positive in _check_tasks(tasks)]


def compute_task_targets(diagnoses, tasks=TASKS, allow_unused: bool = False) -> np.ndarray:
    """float32 [N, T]: 0 for a task's first diagnosis, 1 for its second, MASKED (-1) else.

    An image whose diagnosis is in no task would carry no training signal at all; that is
    a ValueError unless ``allow_unused`` (its row is then all MASKED).
    """
    tasks = _check_tasks(tasks)
    values = np.asarray(pd.Series(diagnoses, dtype=object).astype(str))
    targets = np.full((len(values), len(tasks)), MASKED, np.float32)
    for column, (negative, positive) in enumerate(tasks):
        targets[values == negative, column] = 0.0
        targets[values == positive, column] = 1.0
    unused = (targets == MASKED).all(axis=1)
    if unused.any() and tasks and not allow_unused:
        names = Counter(values[unused]).most_common()
        raise ValueError(f"{int(unused.sum())} image(s) have a diagnosis in no task "
                         f"({', '.join(f'{name} {count}' for name, count in names)}); tasks "
                         f"are {', '.join(task_names(tasks))}. Pass allow_unused=True to keep "
                         "them with every target masked")
    return targets


def _check_tasks(tasks) -> list[tuple[str, str]]:
    checked = []
    for task in tasks:
        if len(task) != 2 or task[0] == task[1] or not all(task):
            raise ValueError(f"a task is a pair of two different diagnoses, got {task!r}")
        checked.append((str(task[0]), str(task[1])))
    if len(set(checked)) != len(checked):
        raise ValueError(f"tasks repeat: {checked}")
    return checked
