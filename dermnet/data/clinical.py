"""Clinical-data encoding: age, sex and lesion site as a fixed-length float32 vector.

Vector layout (``ClinicalEncoder.feature_names`` gives it; 20 features for HAM10000):

    index  0       age, standardised with the training rows' mean and standard deviation;
                   0.0 (the training mean) when the age is missing
    index  1       age missing indicator (1.0 when missing, else 0.0)
    index  2..4    sex one-hot over ``SEXES``            (male, female, unknown)
    index  5..19   localization one-hot over ``LOCALIZATIONS`` (back, ..., acral; unknown at 13)

The one-hot vocabularies are HAM10000's, fixed, so every fold and every saved model share one
layout; only the age scaling is fitted, and only on training rows. Values never seen in the
vocabulary (a typo, a site from another dataset) are encoded as ``unknown`` and reported,
never dropped, so inference never fails on an unexpected value.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermnet.data.vocabulary import LOCALIZATIONS, SEXES

ENCODING_VERSION = 1


@dataclass(frozen=True)
class ClinicalEncoder:
    """A fitted encoding. Build with ``fit_clinical_encoder``; save with ``save_json``."""

    age_mean: float                      # mean age of the training rows with an age
    age_std: float                       # their standard deviation (1.0 if degenerate)
    sexes: tuple[str, ...] = SEXES       # one-hot vocabulary for `sex`
    localizations: tuple[str, ...] = LOCALIZATIONS  # one-hot vocabulary for `localization`
    version: int = ENCODING_VERSION      # layout version, checked on load

    @property
    def feature_names(self) -> tuple[str, ...]:
        return (
            ("age", "age_missing")
            + tuple(f"sex={value}" for value in self.sexes)
            + tuple(f"localization={value}" for value in self.localizations)
        )

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode rows with columns ``age, sex, localization`` -> float32 (N, num_features)."""
        age = pd.to_numeric(frame["age"], errors="coerce").to_numpy(dtype=np.float64)
        missing = np.isnan(age)
        scaled = np.where(missing, 0.0, (age - self.age_mean) / self.age_std)
        sex = _one_hot(frame["sex"], self.sexes, "sex")
        site = _one_hot(frame["localization"], self.localizations, "localization")
        columns = [scaled[:, None], missing[:, None].astype(np.float64), sex, site]
        return np.concatenate(columns, axis=1).astype(np.float32)

    def save_json(self, path: str | Path) -> None:
        payload = asdict(self) | {"feature_names": list(self.feature_names)}
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def fit_clinical_encoder(training_rows: pd.DataFrame) -> ClinicalEncoder:
    """Fit the age scaling on training rows only (validation and test rows must not leak in)."""
    age = pd.to_numeric(training_rows["age"], errors="coerce").dropna()
    if age.empty:
        return ClinicalEncoder(age_mean=0.0, age_std=1.0)
    std = float(age.std(ddof=0))
    # A single distinct age gives std 0; fall back to 1 so scaling stays finite.
    return ClinicalEncoder(age_mean=float(age.mean()), age_std=std if std > 0 else 1.0)


def load_clinical_encoder(path: str | Path) -> ClinicalEncoder:
    """Reload an encoder saved by ``ClinicalEncoder.save_json``; checks the layout version."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
        version = payload.get("version")
        if version != ENCODING_VERSION:
            raise ValueError(f"encoding version {version!r}, expected {ENCODING_VERSION}")
        encoder = ClinicalEncoder(
            age_mean=float(payload["age_mean"]),
            age_std=float(payload["age_std"]),
            sexes=tuple(payload["sexes"]),
            localizations=tuple(payload["localizations"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a valid clinical encoding file ({error})") from error
    if not (math.isfinite(encoder.age_mean) and encoder.age_std > 0):
        raise ValueError(f"{path}: age_mean/age_std must be finite with age_std > 0")
    if "unknown" not in encoder.sexes or "unknown" not in encoder.localizations:
        raise ValueError(f"{path}: both vocabularies must contain 'unknown'")
    return encoder


def _one_hot(values: pd.Series, vocabulary: tuple[str, ...], field: str) -> np.ndarray:
    """One-hot over ``vocabulary``; blank or unseen values count as ``unknown``."""
    normalised = values.fillna("unknown").astype(str).str.strip().str.lower()
    normalised = normalised.replace("", "unknown")
    unseen = sorted(set(normalised) - set(vocabulary))
    if unseen:
        warnings.warn(
            f"clinical {field}: {len(unseen)} value(s) outside the vocabulary encoded as "
            f"'unknown': {', '.join(repr(v) for v in unseen[:5])}",
            stacklevel=3,
        )
        normalised = normalised.where(normalised.isin(vocabulary), "unknown")
    index = pd.Categorical(normalised, categories=vocabulary).codes
    return np.eye(len(vocabulary), dtype=np.float64)[index]
