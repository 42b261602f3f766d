"""The GAN's clinical codes: real rows' age, sex and site, encoded and grouped by class.

    CLINICAL_CODES        width of the clinical code, ``dermnet.data.clinical``'s layout
                          (20 for HAM10000: age, age missing, 3 sexes, 15 sites)
    ClinicalTable         the training rows' encoded vectors sorted by class, with each
                          class's offset and count: ``gan.model.draw_clinical_codes`` samples
                          a real row of a given class from it, in the graph
    make_clinical_table   encoded rows + labels -> ClinicalTable; a class without rows is an
                          error naming it
    save_real_metadata    the training rows' ``METADATA_COLUMNS`` as a CSV (the run's
    load_real_metadata    ``real_metadata.csv``), read back with the same columns

A generated sample's clinical code is always the encoding of one real training row of the
sample's class, never a mixture, so the generator only ever sees plausible (class, age, sex,
site) combinations. The encoder (``dermnet.data.clinical.fit_clinical_encoder``) is fitted
on the GAN's training rows; ``ClinicalEncoder.transform`` encodes any rows with its layout.
Numpy and pandas only: no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermnet.data.clinical import ClinicalEncoder
from dermnet.data.vocabulary import CLASSES

# The layout's width depends only on the fixed vocabularies, not on the fitted age scaling.
CLINICAL_CODES = ClinicalEncoder(age_mean=0.0, age_std=1.0).num_features
METADATA_COLUMNS = ("image_id", "dx", "age", "sex", "localization")


@dataclass(frozen=True, eq=False)
class ClinicalTable:
    """Encoded training rows grouped by class: class k's rows are
    ``rows[offsets[k]:offsets[k] + counts[k]]``."""

    rows: np.ndarray     # float32 [N, C], sorted by class (stable: data order within a class)
    offsets: np.ndarray  # int64 [K] first row of each class
    counts: np.ndarray   # int64 [K] rows of each class, all > 0

    @property
    def width(self) -> int:
        return self.rows.shape[1]


def make_clinical_table(encoded: np.ndarray,  # float32 [N, C] encoded training rows
                        labels: np.ndarray,   # int [N] class index of each row
                        num_classes: int) -> ClinicalTable:
    """Group ``encoded`` by class. Every class needs a row to sample from: a class without
    one is an error (the GAN would draw codes of a class it has never seen)."""
    encoded = np.asarray(encoded, np.float32)
    labels = np.asarray(labels, np.int64)
    if encoded.ndim != 2 or len(encoded) != len(labels):
        raise ValueError(f"encoded rows {encoded.shape} and labels {labels.shape} differ")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
    empty = [_class_name(index) for index in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(f"no training rows of class(es) {', '.join(empty)}: clinical codes "
                         "are sampled from real rows of each class")
    order = np.argsort(labels, kind="stable")
    offsets = np.cumsum(counts) - counts
    return ClinicalTable(encoded[order], offsets, counts)


def _class_name(index: int) -> str:
    return f"{index} ({CLASSES[index]})" if index < len(CLASSES) else str(index)


def save_real_metadata(frame: pd.DataFrame, path: str | Path) -> None:
    """Write the rows' ``METADATA_COLUMNS`` as CSV; a missing age is an empty field."""
    frame.loc[:, list(METADATA_COLUMNS)].to_csv(path, index=False)


def load_real_metadata(path: str | Path) -> pd.DataFrame:
    """Read a ``save_real_metadata`` CSV: strings, with ``age`` float (NaN when missing)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:  # pandas' parser errors are ValueErrors
        raise ValueError(f"{path}: cannot read the real metadata ({error})") from None
    missing = [column for column in METADATA_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    age = pd.to_numeric(frame["age"].replace("", np.nan), errors="coerce")
    return frame.loc[:, list(METADATA_COLUMNS)].assign(age=age)
