"""The run data of the ``ham10000`` task (the first study): which dataset, which split,
which clinical encoding.

``prepare_run_data(config, workdir)`` loads and validates the dataset (the phantom dataset,
generated once into a cache folder, when ``data.data_dir`` is empty), writes or re-reads the
run's ``splits.csv`` and ``clinical_encoding.json``, and returns a ``Ham10000RunData`` (a
``dermnet.runs.tasks.RunData``) from which the ``tf.data`` pipelines (``runs.datasets``)
and the model are made. Its ``provenance``
says what the images were (real or SYNTHETIC, their source sizes, how many the model input
enlarges); the run saves it as ``data.json`` for reports, TensorBoard and predict.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np
import pandas as pd

from dermnet.config import Config
from dermnet.data import splits as splitting
from dermnet.data.clinical import ClinicalEncoder, fit_clinical_encoder, load_clinical_encoder
from dermnet.data.ham10000 import load_ham10000
from dermnet.data.photo_splits import make_balanced
from dermnet.data.pipeline import compute_class_weights
from dermnet.data.provenance import describe_images, read_sources, upsampling_notice
from dermnet.data.vocabulary import CLASSES
from dermnet.models.losses import SmoothedSparseCrossentropy
from dermnet.models.metrics import BalancedAccuracy, MacroAUC
from dermnet.runs.cache import default_cache_dir


def resolve_data_dir(config: Config, log=print) -> Path:
    """``data.data_dir``, or the phantom dataset of ``data.phantom_images`` images (made once)."""
    if config.data.data_dir:
        return Path(config.data.data_dir)
    from dermnet.data.phantom import PHANTOM_VERSION, write_phantom

    count = config.data.phantom_images
    folder = default_cache_dir() / f"phantom-v{PHANTOM_VERSION}-{count}-seed0"
    if not (folder / "HAM10000_metadata.csv").exists():
        log(f"generating the SYNTHETIC phantom dataset ({count} images) in {folder}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_phantom(folder, count, seed=0)
        except ValueError:
            # Another process generated it concurrently (the writer renames atomically).
            if not (folder / "HAM10000_metadata.csv").exists():
                raise
    return folder


@dataclasses.dataclass(frozen=True)
class Ham10000RunData:
    """A ``dermnet.runs.tasks.RunData``: seven classes, one softmax, clinical data."""

    data_dir: Path
    training: pd.DataFrame            # rows of the training folds (reader columns + path, label)
    validation: pd.DataFrame          # rows of the validation fold
    test: pd.DataFrame                # held-out test rows (not used in training)
    holdout: pd.DataFrame | None      # held-out source collections (data.holdout_sources)
    encoder: ClinicalEncoder          # fitted on the training rows
    synthetic: bool                   # True for the phantom dataset
    provenance: dict                  # provenance.describe_images, the run's data.json
    output_names: tuple[str, ...] = CLASSES
    version: ClassVar[str] = "original"
    multi_task: ClassVar[bool] = False

    @property
    def num_training(self) -> int:
        return len(self.training)

    def describe(self) -> str:
        label = "SYNTHETIC phantom data" if self.synthetic else "REAL images"
        held = "" if self.holdout is None else f", {len(self.holdout)} held-out-source"
        return (f"{label} {self.data_dir}: {len(self.training)} training, "
                f"{len(self.validation)} validation, {len(self.test)} test{held} images")

    def clinical(self, frame: pd.DataFrame, config: Config):
        return self.encoder.transform(frame) if config.data.clinical else None

    def build_model(self, config: Config):
        from dermnet.models.classifier import build_classifier

        model = config.model
        return build_classifier(
            model.backbone, config.data.image_size, len(self.output_names),
            clinical_features=self.encoder.num_features if config.data.clinical else None,
            weights=model.weights, dropout=model.dropout, clinical_units=model.clinical_units,
            clinical_dropout=model.clinical_dropout,
            clinical_mask_rate=model.clinical_mask_rate,
            colour_constancy=model.colour_constancy)

    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        """What the model learns for ``frame``'s rows: class indices."""
        return frame["label"].to_numpy()

    def make_loss(self, config: Config) -> keras.losses.Loss:
        smoothing = config.training.label_smoothing
        # Sparse labels cannot be smoothed directly; the one-hot loss can.
        return (SmoothedSparseCrossentropy(smoothing) if smoothing
                else keras.losses.SparseCategoricalCrossentropy())

    def make_metrics(self) -> list:
        classes = len(self.output_names)
        return ["accuracy", BalancedAccuracy(classes), MacroAUC(classes)]

    def class_weights(self, config: Config) -> dict[int, float] | None:
        if config.data.sampling != "class_weights":
            return None
        return compute_class_weights(self.training["label"].to_numpy(), len(self.output_names))


def prepare_run_data(config: Config, workdir: Path, log=print) -> Ham10000RunData:
    """Load the dataset, and write (or, on resume, re-read) the split and the encoding."""
    data_dir = resolve_data_dir(config, log)
    dataset = load_ham10000(data_dir, check_images="header")
    frame = dataset.frame
    if config.data.sources_csv:
        frame = read_sources(frame, config.data.sources_csv)
    splits = _load_or_make_splits(config, frame, workdir / "splits.csv")
    training_ids, validation_ids = splitting.select_fold(splits, config.data.fold)
    frame = frame.set_index("image_id", drop=False)
    training = frame.loc[training_ids].reset_index(drop=True)
    if config.data.sampling == "balanced":
        # Oversampled rows repeat images; the encoder below still sees each image once.
        training = make_balanced(training, seed=config.data.split_seed, column="dx")
    encoder = _load_or_fit_encoder(workdir / "clinical_encoding.json", frame.loc[training_ids])
    synthetic = bool("dataset" in frame and (frame["dataset"] == "phantom").all())
    provenance = describe_images(dataset, config.data.image_size, synthetic, frame)
    if upsampling_notice(provenance):
        log(upsampling_notice(provenance))
    holdout = (_partition(frame, splits, splitting.HOLDOUT) if config.data.holdout_sources
               else None)
    return Ham10000RunData(data_dir, training, frame.loc[validation_ids].reset_index(drop=True),
                           _partition(frame, splits, splitting.TEST), holdout, encoder,
                           synthetic, provenance)


def _partition(frame: pd.DataFrame, splits: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of ``frame`` (indexed by image_id) that ``splits`` puts in ``name``."""
    return frame.loc[splits.loc[splits["fold"] == name, "image_id"]].reset_index(drop=True)


def _load_or_fit_encoder(path: Path, training: pd.DataFrame) -> ClinicalEncoder:
    if path.exists():
        return load_clinical_encoder(path)
    encoder = fit_clinical_encoder(training)
    encoder.save_json(path)
    return encoder


def _load_or_make_splits(config: Config, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if path.exists():
        splits = splitting.load_splits(path)
        if set(splits["image_id"]) != set(frame["image_id"]):
            raise ValueError(f"{path}: its image ids do not match the dataset's; the data "
                             "changed since this run started (use --overwrite to restart)")
        return splits
    data = config.data
    splits = splitting.make_splits(frame, folds=data.folds, test_fraction=data.test_fraction,
                                   seed=data.split_seed, by=data.split_by,
                                   holdout_sources=tuple(data.holdout_sources))
    splitting.save_splits(splits, path)
    return splits


