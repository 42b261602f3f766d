"""The HAM10000 reader and validator: metadata CSV + image folders -> one checked table.

Owns everything between a HAM10000 folder on disk and a pandas table the rest of dermnet
trusts: finding the metadata and the image layout (Kaggle, Dataverse or flat), parsing and
validating every row, resolving and checking every image file (via ``jpeg_check``), and the
human-readable summary printed by ``python -m dermnet.data check``.

Validation collects every problem before failing, and names the file, the CSV line (the
header is line 1) and the field, so one run tells a user everything to fix. Problems that
lose information or break training are errors (DatasetError); ones that can be repaired
safely (an unknown sex becomes "unknown") are warnings carried on the result.
No TensorFlow here: light CLIs import this module.
"""

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermnet.data.jpeg_check import CHECK_MODES, ImageReport, review_image_files
from dermnet.data.vocabulary import (
    AGE_RANGE,
    CLASSES,
    DX_TYPES,
    IMAGE_FOLDERS,
    LOCALIZATIONS,
    METADATA_FILENAME,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SEXES,
    SYNTHETIC_DX_TYPE,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # matched case-insensitively, preferred in order
LAYOUT_NAMES = {
    "HAM10000_images_part_1": "kaggle", "HAM10000_images_part_2": "kaggle",
    "HAM10000_images_part1": "dataverse", "HAM10000_images_part2": "dataverse",
    "images": "flat",
}
KEY_COLUMNS = ("lesion_id", "image_id", "dx")  # a blank here makes a row unusable
SHOWN_PROBLEMS = 20  # problems printed by str(DatasetError); all stay in .problems
SHOWN_EXAMPLES = 5  # examples quoted in one counted warning


class DatasetError(ValueError):
    """A dataset that cannot be used; ``problems`` lists every reason found.

    ``warnings`` holds what would have been warnings on success, so a CLI can show them too.
    """

    def __init__(self, problems: list[str], source: str = "", warnings=()):
        super().__init__(problems, source, warnings)
        self.problems = list(problems)
        self.source = str(source)
        self.warnings = tuple(warnings)

    def __str__(self) -> str:
        count = len(self.problems)
        where = f" in {self.source}" if self.source else ""
        lines = [f"{count} problem{'s' * (count != 1)}{where}:"]
        lines += [f"  - {problem}" for problem in self.problems[:SHOWN_PROBLEMS]]
        if count > SHOWN_PROBLEMS:
            lines.append(f"  ... and {count - SHOWN_PROBLEMS} more")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames has no single truth value
class Ham10000:
    """A loaded, validated HAM10000 dataset: one row of ``frame`` per image."""

    root: Path  # the dataset folder, absolute
    metadata_path: Path  # root / HAM10000_metadata.csv
    layout: str  # e.g. "kaggle (HAM10000_images_part_1, HAM10000_images_part_2)"
    frame: pd.DataFrame  # REQUIRED_COLUMNS (+ dataset) + path (absolute str) + label (int)
    warnings: tuple[str, ...]  # repaired or suspicious things, for the user to read
    image_sizes: tuple[tuple[tuple[int, int], int], ...] = ()  # ((width, height), images)


def load_metadata(csv_path) -> tuple[pd.DataFrame, list[str]]:
    """Parse and validate a HAM10000 metadata CSV alone; return (frame, warnings).

    The frame has REQUIRED_COLUMNS (+ ``dataset`` when present) and ``label``; raises
    DatasetError listing every problem.
    """
    frame, problems, warnings = _read_metadata(Path(csv_path))
    if problems:
        raise DatasetError(problems, csv_path, warnings)
    return _public_columns(frame), warnings


def load_ham10000(data_dir, check_images: str = "header", workers: int | None = None) -> Ham10000:
    """Load and validate the dataset in ``data_dir``; raise DatasetError listing all problems.

    ``check_images``: "none" (files exist), "header" (structure, size and truncation, read
    from each file's first and last bytes) or "full" (also decode every image with OpenCV).
    ``workers``: threads for the image checks (default: twice the CPU count, at most 8).
    """
    if check_images not in CHECK_MODES:
        raise ValueError(f"check_images must be one of {CHECK_MODES}, not {check_images!r}")
    root = Path(data_dir).expanduser().absolute()
    metadata_path, folders = _find_dataset_files(root)
    frame, problems, warnings = _read_metadata(metadata_path)
    files = _index_image_files(folders)
    paths, file_problems, file_warnings = _resolve_images(frame, files, folders, root)
    problems += file_problems
    warnings += file_warnings + _check_layout(folders)
    report = _check_images(frame, paths, root, check_images, workers)
    problems += report.problems
    warnings += report.warnings
    if problems:
        raise DatasetError(problems, root, warnings)
    frame = _public_columns(frame.assign(path=paths))
    return Ham10000(root, metadata_path, _describe_layout(folders), frame, tuple(warnings),
                    report.sizes)


def format_summary(dataset: Ham10000) -> str:
    """A plain-text report: counts, class balance, missing clinical data, layout, warnings."""
    frame = dataset.frame
    lesions = frame["lesion_id"].value_counts()
    lines = [
        f"HAM10000 dataset: {dataset.root}",
        f"  metadata: {dataset.metadata_path.name}    layout: {dataset.layout}",
        f"  images: {len(frame):,}    lesions: {len(lesions):,}    "
        f"lesions with >1 image: {int((lesions > 1).sum()):,}",
        "  class   images       %",
    ]
    counts = frame["dx"].value_counts()
    for code in CLASSES:
        count = int(counts.get(code, 0))
        lines.append(f"  {code:<6} {count:>7,} {100 * count / max(len(frame), 1):>7.1f}")
    lines.append(f"  missing: age {int(frame['age'].isna().sum()):,}, "
                 f"sex {int((frame['sex'] == 'unknown').sum()):,} (unknown), "
                 f"localization {int((frame['localization'] == 'unknown').sum()):,} (unknown)")
    sizes = ", ".join(f"{w}x{h} ({n:,})" for (w, h), n in dataset.image_sizes)
    lines.append(f"  image sizes: {sizes or 'not checked'}")
    lines.append(f"  warnings: {len(dataset.warnings)}")
    lines += [f"    - {warning}" for warning in dataset.warnings]
    return "\n".join(lines)


# --- finding the files ---------------------------------------------------------------------


def _find_dataset_files(root: Path) -> tuple[Path, list[Path]]:
    """Return the metadata path and the image folders present; raise if either is missing."""
    if not root.is_dir():
        raise DatasetError([f"{root} is not a folder"], root)
    problems = []
    metadata_path = root / METADATA_FILENAME
    if not metadata_path.is_file():
        problems.append(_missing_metadata_message(root))
    folders = [root / name for name in IMAGE_FOLDERS if (root / name).is_dir()]
    if not folders:
        loose = sum(1 for entry in os.scandir(root) if _is_image_name(entry.name))
        hint = f"; {loose} image files lie directly in the folder, move them into images/" \
            if loose else ""
        problems.append(f"no image folder in {root}: looked for {', '.join(IMAGE_FOLDERS)}{hint}")
    if problems:
        raise DatasetError(problems, root)
    return metadata_path, folders


def _missing_metadata_message(root: Path) -> str:
    message = f"no {METADATA_FILENAME} in {root}"
    others = sorted(path.name for path in root.glob("*.csv"))
    if others:
        message += f" (found {', '.join(others)}: rename the metadata file if it is one of them)"
    nested = sorted(root.glob(f"*/{METADATA_FILENAME}"))
    if nested:
        message += f" (found {nested[0].relative_to(root)}: pass {nested[0].parent} instead)"
    return message


def _is_image_name(name: str) -> bool:
    # Names starting with "." are macOS resource forks (._ISIC_...), not images.
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _index_image_files(folders: list[Path]) -> dict[str, list[str]]:
    """Map each image id (file stem) to its paths, in folder order then suffix preference."""
    files: dict[str, list[str]] = {}
    for folder in folders:
        entries = sorted((entry for entry in os.scandir(folder) if _is_image_name(entry.name)),
                         key=lambda entry: _suffix_rank(entry.name))
        for entry in entries:
            files.setdefault(os.path.splitext(entry.name)[0], []).append(entry.path)
    return files


def _suffix_rank(name: str) -> int:
    return IMAGE_SUFFIXES.index(os.path.splitext(name)[1].lower())


def _describe_layout(folders: list[Path]) -> str:
    kinds = sorted({LAYOUT_NAMES.get(folder.name, "custom") for folder in folders})
    kind = kinds[0] if len(kinds) == 1 else "mixed"
    return f"{kind} ({', '.join(folder.name for folder in folders)})"


def _check_layout(folders: list[Path]) -> list[str]:
    if len({LAYOUT_NAMES.get(folder.name) for folder in folders}) > 1:
        return [f"image folders of more than one layout: {_describe_layout(folders)}"]
    return []


# --- the metadata CSV ----------------------------------------------------------------------


def _read_metadata(csv_path: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Parse and check the CSV; return (frame with a ``line`` column, problems, warnings).

    Raises DatasetError at once only when no row can be checked (unreadable file, no
    header, required columns missing); everything else is collected.
    """
    name = csv_path.name
    frame, problems, warnings = _parse_csv(csv_path)
    frame = _normalise_text(frame)
    ages, row_problems = _parse_ages(frame)
    row_problems += _check_blank_keys(frame) + _check_diagnoses(frame)
    problems += [f"{name} line {line}: {problem}" for line, problem in sorted(row_problems)]
    problems += _check_unique_images(frame, name) + _check_one_diagnosis_per_lesion(frame, name)
    warnings += _check_vocabulary(frame, "dx_type", (*DX_TYPES, SYNTHETIC_DX_TYPE))
    sexes, sex_warnings = _map_to_vocabulary(frame, "sex", SEXES)
    sites, site_warnings = _map_to_vocabulary(frame, "localization", LOCALIZATIONS)
    label = frame["dx"].map({code: index for index, code in enumerate(CLASSES)})
    frame = frame.assign(age=ages, sex=sexes, localization=sites,
                         label=label.fillna(-1).astype(np.int64))
    return frame, problems, warnings + sex_warnings + site_warnings


def _parse_csv(csv_path: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Read the rows as text, each with the CSV line it starts on; check header and widths."""
    name = csv_path.name
    records = _read_records(csv_path)
    # Blank lines are skipped silently; rows of bare commas (spreadsheet debris) with a note.
    empty = [line for line, row in records if row and not any(field.strip() for field in row)]
    records = [(line, row) for line, row in records if any(field.strip() for field in row)]
    if not records:
        raise DatasetError([f"{name}: empty file (no header line)"], csv_path)
    (_, header), body = records[0], records[1:]
    columns, warnings = _check_header(header, name, csv_path)
    if empty:
        warnings.append(f"{name}: skipped rows without values ({_lines(empty)})")
    widths = [(line, len(row)) for line, row in body if len(row) != len(header)]
    problems = [f"{name} line {line}: {width} fields, the header has {len(header)}"
                for line, width in widths]
    rows = [(line, row) for line, row in body if len(row) == len(header)]
    if not body:
        problems.append(f"{name}: no data rows after the header")
    frame = pd.DataFrame([row for _, row in rows], columns=columns, dtype=str)
    kept = [column for column in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if column in columns]
    frame = frame.loc[:, ~frame.columns.duplicated()][kept]
    return frame.assign(line=[line for line, _ in rows]), problems, warnings


def _read_records(csv_path: Path) -> list[tuple[int, list[str]]]:
    name = csv_path.name
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a byte-order mark
    except UnicodeDecodeError as error:
        raise DatasetError([f"{name}: not UTF-8 text (byte {error.start})"], csv_path) from error
    except OSError as error:
        raise DatasetError([f"{name}: cannot read ({error.strerror})"], csv_path) from error
    reader, records, previous_end = csv.reader(io.StringIO(text), strict=True), [], 0
    try:
        for row in reader:
            records.append((previous_end + 1, row))  # a quoted field may span several lines
            previous_end = reader.line_num
    except csv.Error as error:
        problem = f"{name} line {reader.line_num}: unreadable CSV ({error})"
        raise DatasetError([problem], csv_path) from error
    return records


def _check_header(header: list[str], name: str, csv_path: Path) -> tuple[list[str], list[str]]:
    """Return the normalised column names and warnings; raise if required ones are missing."""
    columns = [column.strip().lower() for column in header]
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        problem = f"{name} line 1: missing required column(s) {', '.join(missing)}"
        if len(header) == 1 and any(separator in header[0] for separator in ";\t|"):
            problem += " (the header has one field: the file must be comma-separated)"
        raise DatasetError([problem], csv_path)
    known = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
    warnings = []
    extra = [column for column in columns if column not in known]
    if extra:
        warnings.append(f"{name}: ignored extra column(s) {', '.join(map(repr, extra))}")
    repeated = sorted({column for column in columns if columns.count(column) > 1} & set(known))
    if repeated:
        warnings.append(f"{name}: column(s) {', '.join(repeated)} repeated; using the first")
    return columns, warnings


def _normalise_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Strip every field; lower-case the coded ones ("MEL " -> "mel")."""
    stripped = {column: frame[column].str.strip() for column in frame.columns if column != "line"}
    for column in ("dx", "dx_type", "sex", "localization"):
        stripped[column] = stripped[column].str.lower()
    return frame.assign(**stripped)


# Per-row checks return (CSV line, problem) pairs, so that problems print in line order.


def _check_blank_keys(frame: pd.DataFrame) -> list[tuple[int, str]]:
    return [(line, f"{column} is blank") for column in KEY_COLUMNS
            for line in frame.loc[frame[column] == "", "line"]]


def _check_diagnoses(frame: pd.DataFrame) -> list[tuple[int, str]]:
    unknown = frame[(frame["dx"] != "") & ~frame["dx"].isin(CLASSES)]
    return [(line, f"dx {code!r} is not a diagnosis code (expected one of {', '.join(CLASSES)})")
            for line, code in zip(unknown["line"], unknown["dx"])]


# Spellings of a missing age: blank in the release; "nan"/"NA" from pandas or R exports.
MISSING_AGES = ("", "nan", "na", "n/a", "unknown")


def _parse_ages(frame: pd.DataFrame) -> tuple[pd.Series, list[tuple[int, str]]]:
    """Return ages as floats (NaN where missing) and a (line, problem) per unusable age."""
    text = frame["age"]
    missing = text.str.lower().isin(MISSING_AGES)
    ages = pd.to_numeric(text.where(~missing), errors="coerce").astype(float)
    low, high = AGE_RANGE
    problems = []
    for line, value, age, absent in zip(frame["line"], text, ages, missing):
        if not absent and np.isnan(age):
            problems.append((line, f"age {value!r} is not a number"))
        elif not (absent or low <= age <= high):
            problems.append((line, f"age {value} is outside {low:g}-{high:g}"))
    return ages.where(~missing), problems


def _check_unique_images(frame: pd.DataFrame, name: str) -> list[str]:
    ids = frame["image_id"]
    repeated = frame[ids.duplicated(keep=False) & (ids != "")]
    return [f"{name}: image_id {image_id} appears on {_lines(group['line'])}"
            for image_id, group in repeated.groupby("image_id", sort=False)]


def _check_one_diagnosis_per_lesion(frame: pd.DataFrame, name: str) -> list[str]:
    """One lesion, one diagnosis: the images of a lesion share its histology or follow-up."""
    usable = frame[(frame["lesion_id"] != "") & frame["dx"].isin(CLASSES)]
    counts = usable.groupby("lesion_id", sort=False)["dx"].nunique()
    problems = []
    for lesion in counts.index[counts > 1]:
        rows = usable[usable["lesion_id"] == lesion]
        parts = [f"{code} ({_lines(group['line'])})" for code, group in rows.groupby("dx")]
        problems.append(f"{name}: lesion {lesion} has {len(parts)} diagnoses: "
                        f"{', '.join(parts)}")
    return problems


def _check_vocabulary(frame: pd.DataFrame, column: str, vocabulary: tuple) -> list[str]:
    unknown = frame[~frame[column].isin(vocabulary)]
    if unknown.empty:
        return []
    return [f"{column}: {len(unknown)} value(s) outside {', '.join(vocabulary)}: "
            f"{_examples(unknown[column], unknown['line'])}"]


def _map_to_vocabulary(frame: pd.DataFrame, column: str, vocabulary: tuple):
    """Return the column with blank or unknown values replaced by "unknown", and warnings."""
    values = frame[column]
    blank = values == ""
    unknown = ~values.isin(vocabulary) & ~blank
    warnings = []
    if blank.any():
        warnings.append(f"{column}: {int(blank.sum())} blank value(s) set to 'unknown' "
                        f"({_lines(frame.loc[blank, 'line'])})")
    if unknown.any():
        warnings.append(f"{column}: {int(unknown.sum())} value(s) outside the vocabulary set to "
                        f"'unknown': {_examples(values[unknown], frame.loc[unknown, 'line'])}")
    return values.where(~(blank | unknown), "unknown"), warnings


# --- the image files -----------------------------------------------------------------------


def _resolve_images(frame: pd.DataFrame, files: dict, folders: list[Path], root: Path):
    """Return (absolute path or "" per row, problems, warnings) for the listed image ids."""
    searched = ", ".join(folder.name for folder in folders)
    paths, problems, repeated = [], [], []
    for image_id, line in zip(frame["image_id"], frame["line"]):
        found = files.get(image_id, []) if image_id else []
        paths.append(str(found[0]) if found else "")
        if image_id and not found:
            problems.append(f"image {image_id} (line {line}): no {image_id}.jpg, .jpeg or .png "
                            f"in {searched}")
        if len(found) > 1:
            repeated.append(f"{image_id} ({', '.join(_relative(p, root) for p in found)})")
    if len(problems) > SHOWN_PROBLEMS:
        problems.insert(0, f"{len(problems)} of {len(frame)} images listed in the metadata "
                           "are missing")
    warnings = []
    if repeated:
        warnings.append(f"{len(repeated)} image(s) found more than once, using the first: "
                        f"{'; '.join(repeated[:SHOWN_EXAMPLES])}")
    unlisted = sorted(set(files) - set(frame["image_id"]))
    if unlisted:
        warnings.append(f"{len(unlisted)} image file(s) not in the metadata, ignored: "
                        f"{', '.join(unlisted[:SHOWN_EXAMPLES])}")
    return paths, problems, warnings


def _check_images(frame: pd.DataFrame, paths: list[str], root: Path, mode: str,
                  workers: int | None) -> ImageReport:
    """Check every image found; problems name the file, the image id and the CSV line."""
    found = [(path, f"{_relative(path, root)} (image {image_id}, line {line})")
             for path, image_id, line in zip(paths, frame["image_id"], frame["line"]) if path]
    if mode == "none" or not found:
        return ImageReport([], [], ())
    return review_image_files(*zip(*found), mode=mode, workers=workers)


# --- small helpers -------------------------------------------------------------------------


def _public_columns(frame: pd.DataFrame) -> pd.DataFrame:
    order = [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, "path", "label"]
    return frame[[column for column in order if column in frame.columns]].reset_index(drop=True)


def _lines(lines) -> str:
    lines = list(lines)
    shown = ", ".join(str(line) for line in lines[:10])
    more = f" and {len(lines) - 10} more" if len(lines) > 10 else ""
    return f"line{'s' * (len(lines) > 1)} {shown}{more}"


def _examples(values, lines) -> str:
    pairs = list(zip(values, lines))
    shown = ", ".join(f"{value!r} (line {line})" for value, line in pairs[:SHOWN_EXAMPLES])
    more = f" and {len(pairs) - SHOWN_EXAMPLES} more" if len(pairs) > SHOWN_EXAMPLES else ""
    return shown + more


def _relative(path, root: Path) -> str:
    return os.path.relpath(path, root)
