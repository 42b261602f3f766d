"""The data side of a run: which dataset, which split, which clinical encoding, which batches.

``prepare_run_data(config, workdir)`` loads and validates the dataset (the phantom dataset,
generated once into a cache folder, when ``data.data_dir`` is empty), writes or re-reads the
run's ``splits.csv`` and ``clinical_encoding.json``, and returns a ``RunData`` from which the
training and validation ``tf.data`` pipelines and the model are made. Its ``provenance``
says what the images were (real or SYNTHETIC, their source sizes, how many the model input
enlarges); the run saves it as ``data.json`` for reports, TensorBoard and predict.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from dermnet.config import Config
from dermnet.data import splits as splitting
from dermnet.data.clinical import ClinicalEncoder, fit_clinical_encoder, load_clinical_encoder
from dermnet.data.ham10000 import load_ham10000
from dermnet.data.lesion_box import estimate_lesion_boxes
from dermnet.data.photo_splits import make_balanced
from dermnet.data.pipeline import (
    PipelineConfig,
    build_dataset,
    build_epoch_dataset,
    compute_class_weights,
)
from dermnet.data.provenance import describe_images, read_sources, upsampling_notice
from dermnet.data.vocabulary import CLASSES
from dermnet.training.losses import SmoothedSparseCrossentropy
from dermnet.training.metrics import BalancedAccuracy, MacroAUC

LESION_BOXES = "lesion_boxes.csv"  # a run directory's cache of crop boxes (data.lesion_crop)


def default_cache_dir() -> Path:
    """``$DERMNET_CACHE`` or ``~/.cache/dermnet``: where the phantom dataset is generated."""
    return Path(os.environ.get("DERMNET_CACHE") or Path.home() / ".cache" / "dermnet")


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
class RunData:
    data_dir: Path
    training: pd.DataFrame            # rows of the training folds (reader columns + path, label)
    validation: pd.DataFrame          # rows of the validation fold
    test: pd.DataFrame                # held-out test rows (not used in training)
    encoder: ClinicalEncoder          # fitted on the training rows
    synthetic: bool                   # True for the phantom dataset
    class_names: tuple[str, ...] = CLASSES
    holdout: pd.DataFrame | None = None  # held-out source collections (data.holdout_sources)
    provenance: dict = dataclasses.field(default_factory=dict)  # provenance.describe_images

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
            model.backbone, config.data.image_size, len(self.class_names),
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
        classes = len(self.class_names)
        return ["accuracy", BalancedAccuracy(classes), MacroAUC(classes)]

    def class_weights(self, config: Config) -> dict[int, float] | None:
        if config.data.sampling != "class_weights":
            return None
        return compute_class_weights(self.training["label"].to_numpy(), len(self.class_names))


def prepare_run_data(config: Config, workdir: Path, log=print) -> RunData:
    """Load the dataset, and write (or, on resume, re-read) the split and the encoding.
    Clinical-photo runs get a ``PhotoRunData`` (``training.photo_data``) instead."""
    if config.data.task == "clinical-photos":
        from dermnet.training.photo_data import prepare_photo_run_data

        return prepare_photo_run_data(config, workdir, log)
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
    return RunData(data_dir, training, frame.loc[validation_ids].reset_index(drop=True),
                   _partition(frame, splits, splitting.TEST), encoder, synthetic,
                   holdout=_partition(frame, splits, splitting.HOLDOUT) if
                   config.data.holdout_sources else None, provenance=provenance)


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


def _pipeline_config(config: Config, global_batch: int) -> PipelineConfig:
    data = config.data
    return PipelineConfig(image_size=tuple(data.image_size), resize=data.resize,
                          batch_size=global_batch,
                          cache=data.cache, augment=data.augment, seed=config.training.seed,
                          deterministic=True)


def make_training_dataset(data: RunData, config: Config, first_epoch: int, last_epoch: int,
                          global_batch: int, workdir: Path | None = None) -> tf.data.Dataset:
    """Batches of epochs ``first_epoch..last_epoch-1``, each shuffled and augmented from
    (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
    With ``data.lesion_crop``, images are cut to their lesion boxes (cached in ``workdir``)."""
    frame = data.training
    dataset = build_epoch_dataset(frame["path"].tolist(), data.targets(frame),
                                  data.clinical(frame, config),
                                  config=_pipeline_config(config, global_batch),
                                  first_epoch=first_epoch, last_epoch=last_epoch,
                                  boxes=make_lesion_boxes(frame, config, workdir))
    return _shard_by_data(dataset)


def make_evaluation_dataset(frame: pd.DataFrame, data: RunData, config: Config,
                            global_batch: int, workdir: Path | None = None) -> tf.data.Dataset:
    """Ordered, unaugmented batches of ``frame``'s rows (lesion crops as in training)."""
    dataset = build_dataset(frame["path"].tolist(), data.targets(frame),
                            data.clinical(frame, config),
                            config=_pipeline_config(config, global_batch), training=False,
                            boxes=make_lesion_boxes(frame, config, workdir))
    return _shard_by_data(dataset)


def make_lesion_boxes(frame: pd.DataFrame, config: Config,
                      workdir: Path | None = None) -> np.ndarray | None:
    """float32 [N, 4] crop boxes of ``frame``'s rows when ``data.lesion_crop`` > 0, else None:
    each image's estimated lesion box, moved out by that margin and grown to the input's
    aspect ratio (``lesion_box.estimate_crop_box``). With a ``workdir``, the boxes of every
    image seen are kept in its ``lesion_boxes.csv`` (image_id, x0, y0, x1, y1: the crop box;
    found: False where the whole image stood in), so a resumed run or its evaluation reuses
    them and only new images are estimated."""
    if not config.data.lesion_crop:
        return None
    path = None if workdir is None else Path(workdir) / LESION_BOXES
    known = (pd.read_csv(path, dtype={"image_id": str})
             if path is not None and path.exists() else None)
    rows = frame.drop_duplicates("image_id")  # oversampled rows repeat images
    if known is not None:
        rows = rows[~rows["image_id"].isin(known["image_id"])]
    if len(rows) or known is None:
        new = _estimate_crop_boxes(rows, config)
        known = new if known is None else pd.concat([known, new], ignore_index=True)
        if path is not None:
            _write_atomically(known, path)
    table = known.set_index("image_id").loc[frame["image_id"], ["x0", "y0", "x1", "y1"]]
    return table.to_numpy(np.float32)


def _estimate_crop_boxes(rows: pd.DataFrame, config: Config) -> pd.DataFrame:
    """image_id, x0, y0, x1, y1, found of ``rows``' images (one thread per core)."""
    height, width = config.data.image_size
    boxes, found = estimate_lesion_boxes(rows["path"].tolist(), config.data.lesion_crop,
                                         width / height, workers=os.cpu_count() or 1)
    table = pd.DataFrame(boxes.astype(np.float64), columns=["x0", "y0", "x1", "y1"])
    table.insert(0, "image_id", rows["image_id"].to_numpy())
    table["found"] = found
    return table


def _write_atomically(table: pd.DataFrame, path: Path) -> None:
    """Write a CSV whole or not at all: a run killed mid-write leaves the old file."""
    partial = path.with_name(path.name + ".partial")
    # 9 significant digits round-trip float32 exactly: the boxes read back cut the same pixels.
    table.to_csv(partial, index=False, float_format="%.9g")
    os.replace(partial, path)


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Multi-worker runs split batches between workers, not files (the inputs are one list).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
