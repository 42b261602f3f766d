"""The run data of the ``clinical-photos`` task (the second study): which photos, which patient
split, which version of the data (original or skin-cropped, optionally class-balanced), and
the multi-task targets, loss and metrics of the four VGG16 variants.

``prepare_run_data(config, workdir)`` mirrors ``runs.ham10000.prepare_run_data``: it
loads and validates the photos (the SYNTHETIC photo phantom, generated once into the cache,
when ``data.data_dir`` is empty), writes or re-reads the run's ``splits.csv`` (train / val /
test, grouped by patient) and returns a ``PhotoRunData``, a ``dermnet.runs.tasks.RunData``
that ``training.run`` drives like the HAM10000 one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from dermnet.config import Config
from dermnet.data import clinical_photos as photos
from dermnet.data import photo_splits
from dermnet.runs.cache import default_cache_dir

PHANTOM_SIZE = (450, 600)  # (H, W) of the generated phantom photos


def resolve_photo_dir(config: Config, log=print) -> Path:
    """``data.data_dir``, or the photo phantom of ``data.phantom_patients`` patients."""
    if config.data.data_dir:
        return Path(config.data.data_dir)

    from dermnet.data.photo_phantom import PHOTO_PHANTOM_VERSION, write_photo_phantom

    patients = config.data.phantom_patients
    folder = default_cache_dir() / f"photo-phantom-v{PHOTO_PHANTOM_VERSION}-{patients}-seed0"
    if not (folder / photos.MANIFEST_FILENAME).exists():
        log(f"generating the SYNTHETIC clinical photo phantom ({patients} patients) in {folder}")
        try:
            write_photo_phantom(folder, patients, seed=0, image_size=PHANTOM_SIZE)
        except ValueError:
            # Another process generated it concurrently (the writer renames atomically).
            if not (folder / photos.MANIFEST_FILENAME).exists():
                raise
    return folder


@dataclasses.dataclass(frozen=True)
class PhotoRunData:
    """A ``dermnet.runs.tasks.RunData``: one sigmoid per binary task, no clinical data."""

    data_dir: Path
    training: pd.DataFrame            # training photos (repeated rows when balanced)
    validation: pd.DataFrame
    test: pd.DataFrame
    synthetic: bool                   # True for the photo phantom
    version: str                      # "original" or "cropped", "+balanced" when balanced
    tasks: tuple = photos.TASKS       # (negative, positive) diagnosis pairs
    multi_task: ClassVar[bool] = True

    @property
    def num_training(self) -> int:
        return len(self.training)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The binary tasks' names, one sigmoid output each."""
        return tuple(photos.task_names(self.tasks))

    @property
    def holdout(self) -> None:
        """Photo runs hold out no source collection."""
        return None

    @property
    def provenance(self) -> None:
        """Not recorded: the log's ``describe`` line says what the photos were."""
        return None

    def describe(self) -> str:
        label = "SYNTHETIC photo phantom" if self.synthetic else "photos"
        return (f"{label} {self.data_dir} ({self.version}): {len(self.training)} training, "
                f"{len(self.validation)} validation, {len(self.test)} test photos; tasks "
                f"{', '.join(self.output_names)}")

    def clinical(self, frame: pd.DataFrame, config: Config):
        return None

    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        """float32 [N, T]: 1 for a task's positive diagnosis, 0 for its negative, -1 else."""
        return photos.compute_task_targets(frame["diagnosis"], self.tasks, allow_unused=True)

    def build_model(self, config: Config):
        from dermnet.models.multitask import VARIANTS, build_multitask_vgg16

        variant = config.model.variant
        # From-scratch variants take no pretrained weights, whatever the config says.
        weights = config.model.weights if VARIANTS[variant].pretrained else None
        return build_multitask_vgg16(variant, tuple(config.data.image_size),
                                     task_names=self.output_names, weights=weights,
                                     dropout=config.model.dropout)

    def make_loss(self, config: Config):
        from dermnet.models.losses import MaskedBinaryCrossentropy

        return MaskedBinaryCrossentropy()

    def make_metrics(self) -> list:
        from dermnet.models.metrics import make_task_metrics

        return make_task_metrics(self.output_names)

    def class_weights(self, config: Config) -> None:
        return None  # imbalance is handled by the balanced version of the data


def prepare_run_data(config: Config, workdir: Path, log=print) -> PhotoRunData:
    """Load the photos, and write (or, on resume, re-read) the patient split."""
    data_dir = resolve_photo_dir(config, log)
    dataset = photos.load_photo_dataset(data_dir)
    frame = dataset.frame
    if config.data.crop_dir:
        crop_dir = Path(config.data.crop_dir)
        frame = photo_splits.cropped_dataset_manifest(frame, crop_dir / "crop_manifest.csv",
                                                      crop_dir)
    splits = _load_or_make_splits(config, frame, workdir / "splits.csv")
    frame = photo_splits.attach_photo_splits(frame, splits)
    balanced = config.data.sampling == "balanced"
    if balanced:
        frame = photo_splits.make_balanced(frame, seed=config.data.split_seed)
    version = ("cropped" if config.data.crop_dir else "original") + ("+balanced" if balanced
                                                                    else "")
    parts = {name: frame[frame["split"] == name].reset_index(drop=True)
             for name in photo_splits.SPLITS}
    synthetic = "skin_x0" in frame and "SYNTHETIC" in _readme(data_dir)
    return PhotoRunData(data_dir, parts["train"], parts["val"], parts["test"], synthetic,
                        version)


def _readme(data_dir: Path) -> str:
    path = data_dir / "README.txt"
    return path.read_text(errors="replace") if path.is_file() else ""


def _load_or_make_splits(config: Config, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if path.exists():
        splits = photo_splits.load_photo_splits(path)
        if set(splits["image"]) != set(frame["image"]):
            raise ValueError(f"{path}: its photos do not match the dataset's; the data "
                             "changed since this run started (use --overwrite to restart)")
        return splits
    test = config.data.test_fraction
    splits = photo_splits.make_photo_splits(frame, fractions=(1 - 2 * test, test, test),
                                            seed=config.data.split_seed)
    photo_splits.save_photo_splits(splits, path)
    return splits
