"""The external-image-bank reader: another dataset in the HAM10000 layout, read for scoring a
trained model, not for training one.

Owns what differs from ``ham10000.load_ham10000``: only ``image_id`` and ``dx`` are required.
A missing ``lesion_id`` column (or a blank value) makes each image its own lesion; missing
``age``, ``sex``, ``localization`` and ``dx_type`` columns (or blank values) become a missing
age and "unknown", which the clinical encoder maps like any unknown. The set's classes may be
any subset of the seven. Everything else, finding the files, every per-row check, resolving
and checking the images, is ``ham10000``'s machinery, so problems name the file, the CSV line
and the field exactly as ``python -m dermnet.data check`` does, and none is dropped silently.
Images are fully decoded by the check by default: a set is scored once, and a file that only
fails inside TensorFlow's decoder could not be named there. No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermnet.data import ham10000
from dermnet.data.ham10000 import DatasetError, Ham10000
from dermnet.data.jpeg_check import CHECK_MODES
from dermnet.data.vocabulary import (
    CLASSES,
    DX_TYPES,
    LOCALIZATIONS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SEXES,
    SYNTHETIC_DX_TYPE,
)

EXTERNAL_REQUIRED = ("image_id", "dx")  # without these a row cannot be scored at all
# Filled in when absent: blank is the reader's spelling of "missing" for each of them.
FILLED_COLUMNS = tuple(column for column in REQUIRED_COLUMNS if column not in EXTERNAL_REQUIRED)
CLINICAL_COLUMNS = ("age", "sex", "localization")
# What the clinical encoding makes of a clinical column the set lacks (see clinical.py).
MISSING_AS = {"age": "a missing age", "sex": "sex 'unknown'", "localization": "site 'unknown'"}
SYNTHETIC_SOURCES = ("phantom", "gan")  # `dataset` values of dermnet's own synthetic images
# An image whose width/height ratio is within 1% of the model input's is "the same aspect":
# 600x450 against 300x224 (0.45% apart) is resized, not reshaped.
ASPECT_TOLERANCE = 0.01
SHOWN_SIZES = 20  # distinct image sizes listed by describe_sizes


@dataclass(frozen=True, eq=False)
class ExternalSet(Ham10000):
    """A loaded, checked external set: ``Ham10000``'s fields plus what the CSV lacked."""

    absent_columns: tuple[str, ...] = ()  # of FILLED_COLUMNS, those the CSV did not have

    @property
    def classes(self) -> tuple[str, ...]:
        """The diagnoses present, in class order."""
        present = set(self.frame["dx"])
        return tuple(code for code in CLASSES if code in present)

    @property
    def synthetic(self) -> bool:
        """Every row made by dermnet (phantom or GAN): its figures must never pass as real."""
        made = self.frame["dx_type"].eq(SYNTHETIC_DX_TYPE)
        if "dataset" in self.frame:
            made |= self.frame["dataset"].isin(SYNTHETIC_SOURCES)
        return bool(made.all())


def load_external(data_dir, check_images: str = "full", workers: int | None = None) -> ExternalSet:
    """Load and check the set in ``data_dir``; raise DatasetError listing every problem.

    ``check_images`` and ``workers`` as in ``ham10000.load_ham10000`` (default: a full
    decode of every image).
    """
    if check_images not in CHECK_MODES:
        raise ValueError(f"check_images must be one of {CHECK_MODES}, not {check_images!r}")
    root = Path(data_dir).expanduser().absolute()
    metadata_path, folders = ham10000._find_dataset_files(root)
    frame, problems, warnings, absent = read_external_metadata(metadata_path)
    files = ham10000._index_image_files(folders)
    paths, file_problems, file_warnings = ham10000._resolve_images(frame, files, folders, root)
    report = ham10000._check_images(frame, paths, root, check_images, workers)
    problems += file_problems + report.problems
    warnings += file_warnings + ham10000._check_layout(folders) + report.warnings
    if problems:
        raise DatasetError(problems, root, warnings)
    frame = ham10000._public_columns(frame.assign(path=paths))
    return ExternalSet(root, metadata_path, ham10000._describe_layout(folders), frame,
                       tuple(warnings), report.sizes, absent)


def read_external_metadata(csv_path) -> tuple[pd.DataFrame, list[str], list[str], tuple]:
    """Parse and check the CSV: (frame with a ``line`` column, problems, warnings, absent
    columns). The per-row checks are ``ham10000``'s; only the header rules are looser."""
    csv_path = Path(csv_path)
    name = csv_path.name
    frame, problems, warnings, absent = _parse_csv(csv_path)
    frame = ham10000._normalise_text(frame)
    frame, lesion_warnings = _default_lesions(frame, name, absent)
    ages, row_problems = ham10000._parse_ages(frame)
    row_problems += ham10000._check_blank_keys(frame) + ham10000._check_diagnoses(frame)
    problems += [f"{name} line {line}: {problem}" for line, problem in sorted(row_problems)]
    problems += (ham10000._check_unique_images(frame, name)
                 + ham10000._check_one_diagnosis_per_lesion(frame, name))
    warnings += lesion_warnings + _vocabulary_warnings(frame, absent)
    sexes, sex_warnings = ham10000._map_to_vocabulary(frame, "sex", SEXES)
    sites, site_warnings = ham10000._map_to_vocabulary(frame, "localization", LOCALIZATIONS)
    # An absent column is said once (in ``absent``), not as one blank warning per row.
    warnings += [text for column, found in (("sex", sex_warnings), ("localization", site_warnings))
                 if column not in absent for text in found]
    label = frame["dx"].map({code: index for index, code in enumerate(CLASSES)})
    frame = frame.assign(age=ages, sex=sexes, localization=sites,
                         label=label.fillna(-1).astype(np.int64))
    return frame, problems, warnings, absent


def _parse_csv(csv_path: Path) -> tuple[pd.DataFrame, list[str], list[str], tuple]:
    """The rows as text with their CSV lines, absent optional columns filled with blanks."""
    name = csv_path.name
    records = [(line, row) for line, row in ham10000._read_records(csv_path)
               if any(field.strip() for field in row)]  # blank lines and bare-comma rows
    if not records:
        raise DatasetError([f"{name}: empty file (no header line)"], csv_path)
    (_, header), body = records[0], records[1:]
    columns, warnings = _check_header(header, name, csv_path)
    problems = [f"{name} line {line}: {len(row)} fields, the header has {len(header)}"
                for line, row in body if len(row) != len(header)]
    if not body:
        problems.append(f"{name}: no data rows after the header (the set is empty)")
    rows = [(line, row) for line, row in body if len(row) == len(header)]
    frame = pd.DataFrame([row for _, row in rows], columns=columns, dtype=str)
    frame = frame.loc[:, ~frame.columns.duplicated()]
    absent = tuple(column for column in FILLED_COLUMNS if column not in frame.columns)
    kept = [column for column in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if column in frame]
    frame = frame[kept].assign(**{column: "" for column in absent})
    return frame.assign(line=[line for line, _ in rows]), problems, warnings, absent


def _check_header(header: list[str], name: str, csv_path: Path) -> tuple[list[str], list[str]]:
    columns = [column.strip().lower() for column in header]
    missing = [column for column in EXTERNAL_REQUIRED if column not in columns]
    if missing:
        problem = f"{name} line 1: missing required column(s) {', '.join(missing)}"
        if len(header) == 1 and any(separator in header[0] for separator in ";\t|"):
            problem += " (the header has one field: the file must be comma-separated)"
        raise DatasetError([problem], csv_path)
    extra = [column for column in columns
             if column not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)]
    warnings = [f"{name}: ignored extra column(s) {', '.join(map(repr, extra))}"] if extra else []
    return columns, warnings


def _default_lesions(frame: pd.DataFrame, name: str,
                     absent: tuple) -> tuple[pd.DataFrame, list[str]]:
    """A blank lesion id makes the image its own lesion: no grouping is claimed that the
    set does not state (the bootstrap then resamples that image alone)."""
    blank = frame["lesion_id"] == ""
    if not blank.any():
        return frame, []
    lesions = frame["lesion_id"].where(~blank, frame["image_id"])
    note = [] if "lesion_id" in absent else [
        f"{name}: {int(blank.sum())} blank lesion_id(s): each such image is its own lesion "
        f"({ham10000._lines(frame.loc[blank, 'line'])})"]
    return frame.assign(lesion_id=lesions), note


def _vocabulary_warnings(frame: pd.DataFrame, absent: tuple) -> list[str]:
    if "dx_type" in absent:
        return []
    present = frame[frame["dx_type"] != ""]  # a blank dx_type is only unknown, not odd
    return ham10000._check_vocabulary(present, "dx_type", (*DX_TYPES, SYNTHETIC_DX_TYPE))


def describe_clinical(external: ExternalSet) -> dict:
    """How much clinical data the set carries: absent columns and missing values per field."""
    frame = external.frame
    return {"absent_columns": [column for column in external.absent_columns
                               if column in CLINICAL_COLUMNS],
            "age_missing": int(frame["age"].isna().sum()),
            "sex_unknown": int((frame["sex"] == "unknown").sum()),
            "localization_unknown": int((frame["localization"] == "unknown").sum())}


def missing_clinical_notice(external: ExternalSet) -> str | None:
    """"the set has no sex, localization column (sex 'unknown', site 'unknown')", or None."""
    absent = [column for column in CLINICAL_COLUMNS if column in external.absent_columns]
    if not absent:
        return None
    return (f"the set has no {', '.join(absent)} column "
            f"({', '.join(MISSING_AS[column] for column in absent)})")


def describe_sizes(image_sizes, input_size) -> dict:
    """The stored sizes seen (``((width, height), images)`` pairs) against a model input
    (H, W): extremes, how many images have another aspect ratio, how many get enlarged."""
    height, width = (int(side) for side in input_size)
    sizes = [(int(w), int(h), int(n)) for (w, h), n in image_sizes]
    if not sizes:
        return {"checked": False}
    aspect = width / height
    other = sum(n for w, h, n in sizes if abs(w / h - aspect) > ASPECT_TOLERANCE * aspect)
    return {"checked": True,
            "min_width": min(w for w, _, _ in sizes), "max_width": max(w for w, _, _ in sizes),
            "min_height": min(h for _, h, _ in sizes),
            "max_height": max(h for _, h, _ in sizes),
            # Commonest first; a bank of camera images can hold hundreds of sizes.
            "distinct": [{"width": w, "height": h, "images": n}
                         for w, h, n in sizes[:SHOWN_SIZES]], "num_distinct": len(sizes),
            "input_size": [height, width], "other_aspect_images": other,
            "upsampled_images": sum(n for w, h, n in sizes if w < width or h < height)}


def format_error(error: DatasetError) -> str:
    """A DatasetError on one line (a CLI prints ``error: <this>``): the set, then each
    problem, as ``str(error)`` would list them."""
    shown = error.problems[:ham10000.SHOWN_PROBLEMS]
    more = len(error.problems) - len(shown)
    text = "; ".join(shown) + (f"; ... and {more} more" if more else "")
    count = len(error.problems)
    if count == 1:  # most problems name the file already; others need the set's folder
        return text if error.source in text else f"{error.source}: {text}"
    return f"{count} problems in {error.source}: {text}"
