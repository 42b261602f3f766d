"""Clinical photos (study 2): the patient split and the versions of the data.

Owns the step from one validated photo table (`clinical_photos`) to the tables a run trains
and evaluates on: the patient-grouped, diagnosis-stratified train / val / test split (made,
summarised, saved, loaded and attached to the photos) and the versions of the data: the
original photos (the loaded frame as it is), class-balanced by oversampling, and cropped
to skin by ``python -m preprocess crop``. No TensorFlow here: light CLIs import this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dermnet.data.clinical_photos import SHOWN_EXAMPLES, image_key, read_table
from dermnet.data.ham10000 import DatasetError

# --- patient-grouped, diagnosis-stratified split -------------------------------------------

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("image", "patient_id", "diagnosis", "split")


def make_photo_splits(frame: pd.DataFrame, fractions=(0.8, 0.1, 0.1), seed: int = 0):
    """Assign every photo to train / val / test; deterministic for ``seed``.

    All photos of a patient land in one split (the paper's rule). Stratified by diagnosis:
    each patient belongs to the stratum of their most frequent diagnosis (ties: the rarer
    diagnosis in the whole frame, which gains most from stratification), and within each
    stratum patients, in random order, go to the split furthest below its share of photos.
    """
    fractions = np.asarray(fractions, float)
    if fractions.shape != (3,) or (fractions < 0).any() or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(f"fractions are three shares (train, val, test) summing to 1, "
                         f"got {tuple(fractions)}")
    strata = _patient_strata(frame)
    photos = frame.groupby("patient_id").size()
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for diagnosis in sorted(strata.unique()):
        patients = np.array(sorted(strata.index[strata == diagnosis]), dtype=object)
        order = patients[rng.permutation(len(patients))]
        assignment.update(_deal_patients(photos[order], fractions))
    table = frame.loc[:, list(SPLIT_COLUMNS[:3])].reset_index(drop=True)
    return table.assign(split=table["patient_id"].map(assignment))


def _deal_patients(photos: pd.Series, fractions) -> dict[str, str]:
    """Each patient (``photos``: photos per patient, in dealing order) to the split furthest
    below its share of the photos."""
    targets, taken, assignment = fractions * photos.sum(), np.zeros(len(SPLITS)), {}
    for patient, count in photos.items():
        split = int(np.argmax(targets - taken))  # ties: the earlier split
        assignment[patient] = SPLITS[split]
        taken[split] += count
    return assignment


def _patient_strata(frame: pd.DataFrame) -> pd.Series:
    """patient_id -> the diagnosis that stratifies the patient (see make_photo_splits)."""
    counts = frame.groupby(["patient_id", "diagnosis"]).size().rename("photos").reset_index()
    counts["overall"] = counts["diagnosis"].map(frame["diagnosis"].value_counts())
    counts = counts.sort_values(["patient_id", "photos", "overall", "diagnosis"],
                                ascending=[True, False, True, True])
    return counts.drop_duplicates("patient_id").set_index("patient_id")["diagnosis"]


def compute_split_counts(splits: pd.DataFrame) -> pd.DataFrame:
    """Photos per diagnosis (rows) and split (columns, SPLITS order), with ``all``."""
    counts = pd.crosstab(splits["diagnosis"], splits["split"])
    counts = counts.reindex(columns=list(SPLITS), fill_value=0)
    return counts.assign(all=counts.sum(axis=1))


def format_photo_split_summary(splits: pd.DataFrame) -> str:
    """Photos per diagnosis and split (with the split's share of that diagnosis), photos and
    patients per split, and the patients found in more than one split (0 by construction)."""
    counts = compute_split_counts(splits)
    table = counts.astype(str)
    for split in SPLITS:
        table[split] += (100 * counts[split] / counts["all"]).map(" ({:.0f}%)".format)
    patients = splits.groupby("split")["patient_id"].nunique()
    table.loc["photos"] = counts.sum().astype(str)
    table.loc["patients"] = [str(patients.get(split, 0)) for split in SPLITS] \
        + [str(splits["patient_id"].nunique())]
    leaked = int((splits.groupby("patient_id")["split"].nunique() > 1).sum())
    table = table.rename_axis(index=None, columns=None).to_string()
    return f"{table}\npatients in more than one split: {leaked}"


def save_photo_splits(splits: pd.DataFrame, path) -> None:
    """Write the split table atomically (a temporary file renamed into place)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    splits.loc[:, list(SPLIT_COLUMNS)].to_csv(partial, index=False, lineterminator="\n")
    partial.replace(path)


def load_photo_splits(path) -> pd.DataFrame:
    """Read a split table, checking its columns and split names (ValueError names the line)."""
    path = Path(path)
    splits = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in SPLIT_COLUMNS if column not in splits.columns]
    if missing:
        raise ValueError(f"{path} line 1: missing column(s) {', '.join(missing)}")
    bad = np.flatnonzero(~splits["split"].isin(SPLITS).to_numpy())
    if len(bad):
        raise ValueError(f"{path} line {bad[0] + 2}: split {splits['split'].iloc[bad[0]]!r} "
                         f"is not one of {', '.join(SPLITS)}")
    return splits.loc[:, list(SPLIT_COLUMNS)]


def attach_photo_splits(frame: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``split`` column from ``splits`` (matched on ``image``)."""
    split = frame["image"].map(splits.set_index("image")["split"])
    if split.isna().any():
        missing = frame.loc[split.isna(), "image"].tolist()
        raise ValueError(f"{len(missing)} photo(s) have no split: "
                         f"{', '.join(missing[:SHOWN_EXAMPLES])}")
    return frame.assign(split=split)


# --- variants: original (the loaded frame), class-balanced, cropped --------------------------


def make_balanced(frame: pd.DataFrame, seed: int = 0, column: str = "diagnosis") -> pd.DataFrame:
    """Oversample the training photos of minority diagnoses up to the majority's count.
    ``column`` names the class column (``dx`` for HAM10000 rows).

    Training rows are those with ``split == "train"``, or all rows when there is no
    ``split`` column; other rows (val, test) are returned untouched, so evaluation sees the
    real class balance. Oversampling, not undersampling: the study's rarest class (acne,
    581 photos) would cut psoriasis from 6,545 to 581 photos and throw away most of the data,
    while random augmentation makes each repeat a different input. Each photo is repeated
    as evenly as possible (whole copies, then a random sample without replacement).
    The added rows follow the originals and have ``repeat`` = 1, 2, ... (0 on originals).
    """
    training = frame["split"].eq("train") if "split" in frame else pd.Series(True, frame.index)
    counts = frame.loc[training, column].value_counts()
    rng = np.random.default_rng(seed)
    extra = [np.zeros(0, np.int64)]  # row positions to repeat
    for diagnosis in sorted(counts.index):
        rows = np.flatnonzero(training & frame[column].eq(diagnosis))
        whole, rest = divmod(int(counts.max()) - len(rows), len(rows))
        extra += [np.tile(rows, whole), np.sort(rng.choice(rows, rest, replace=False))]
    positions = np.concatenate(extra)
    repeat = pd.Series(positions).groupby(positions).cumcount().to_numpy() + 1
    copies = frame.iloc[positions].assign(repeat=repeat)
    return pd.concat([frame.assign(repeat=0), copies], ignore_index=True)


CROP_COLUMNS = ("file", "status", "width", "height", "x0", "y0", "x1", "y1",
                "skin_fraction", "threshold", "error")
CROP_FAILED = ("unreadable",)  # the crop tool could not read the photo: a problem
CROP_KEPT = ("no_skin",)  # no skin cluster found: the original photo is used as it is


def cropped_dataset_manifest(frame: pd.DataFrame, crop_manifest_csv, cropped_root):
    """``frame`` with ``path`` pointing at the copies of ``python -m preprocess crop SRC DST``.

    ``crop_manifest_csv`` is that tool's manifest (CROP_COLUMNS, ``file`` relative to SRC,
    which must be the dataset root so that ``file`` matches ``image``); ``cropped_root`` is
    DST, which mirrors SRC. Rows with status ``no_skin`` keep the original photo; every other
    status but ``unreadable`` must have its cropped file. Adds ``crop_status`` and the crop
    box ``crop_x0, crop_y0, crop_x1, crop_y1`` as the manifest gives it (NaN where blank;
    the whole photo for ``no_skin``), to compare with a true skin box. Raises DatasetError
    listing photos missing from the manifest, failed crops and missing cropped files.
    """
    name = Path(crop_manifest_csv).name
    crops, problems = _read_crop_manifest(Path(crop_manifest_csv))
    keys = frame["image"].map(image_key).to_numpy()
    rows = crops.reindex(keys)  # all-NaN for photos the crop tool did not list
    listed, kept = rows["status"].notna().to_numpy(), rows["status"].isin(CROP_KEPT).to_numpy()
    failed = rows["status"].isin(CROP_FAILED).to_numpy()
    root = Path(cropped_root).absolute()
    paths = np.where(kept, frame["path"].to_numpy(dtype=object),
                     np.array([str(root / key) for key in keys], dtype=object))
    images = frame["image"].to_numpy()
    problems += [f"photo {image!r} is not in {name}" for image in images[~listed]]
    problems += [f"{row.where}: file {row.file!r}: crop failed ({row.status}: "
                 f"{row.error or 'no reason given'})"
                 for row in rows[failed].drop_duplicates("where").itertuples()]
    wanted = listed & ~kept & ~failed
    problems += [f"cropped copy of {image!r} not found: {path}"
                 for image, path in zip(images[wanted], paths[wanted]) if not os.path.isfile(path)]
    if problems:
        raise DatasetError(problems, crop_manifest_csv)
    boxes = {f"crop_{corner}": pd.to_numeric(rows[corner], errors="coerce").to_numpy()
             for corner in ("x0", "y0", "x1", "y1")}
    return frame.assign(path=paths, crop_status=rows["status"].to_numpy(), **boxes)


def _read_crop_manifest(csv_path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The crop manifest indexed by normalised ``file``, with a ``where`` column."""
    crops, problems = read_table(csv_path, ("file", "status", "error"))
    crops = crops.reindex(columns=[*CROP_COLUMNS, "where"], fill_value="")
    crops.index = crops["file"].map(image_key)
    repeated = crops.index.duplicated(keep="first")
    problems += [f"{where}: file {file!r} is listed twice" for where, file
                 in zip(crops.loc[repeated, "where"], crops.loc[repeated, "file"])]
    return crops[~repeated], problems
