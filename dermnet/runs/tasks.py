"""The tasks dermnet trains, in one table, and the interface every task's run data keeps.

A *task* is what a run learns from which data: ``ham10000`` (the first study: seven
dermoscopic classes, one softmax, optional clinical data) and ``clinical-photos`` (the second
study: independent binary diagnoses of clinical photographs, one sigmoid per task). A run's
``config.data.task`` names one; ``get_task(name)`` gives its ``Task``, whose ``prepare``
loads the data of a run directory into an object that follows the ``RunData`` protocol. The
trainer, the evaluation and the GAN use only that protocol and the ``Task`` fields: no
other module compares task names. A new task is one ``Task`` entry and one ``RunData``
class.

This module imports neither Keras nor TensorFlow (the command-line parsers use it before
any work starts); each task's data module is imported when a run prepares its data.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # dermnet.config reads TASKS from here: no import back at run time
    import pandas as pd

    from dermnet.config import Config


@runtime_checkable
class RunData(Protocol):
    """One run's data, as a task prepares it from a run directory.

    Rows are ``pandas`` frames with at least ``image_id`` and ``path``; ``targets(frame)``
    turns rows into what the model learns. ``output_names`` name the model's outputs in
    order: the class codes of one softmax (``multi_task`` False), or the names of
    independent binary tasks, one sigmoid each (``multi_task`` True).
    """

    data_dir: Path               # the dataset folder (a cache folder for phantom data)
    training: pd.DataFrame       # training rows (repeated when the sampling oversamples)
    validation: pd.DataFrame     # the validation rows: early stopping, best epoch
    test: pd.DataFrame           # held-out test rows, never used in training
    synthetic: bool              # True for the project's phantom data
    version: str                 # the data version: "original", "cropped", "+balanced"
    multi_task: bool             # independent sigmoid outputs instead of one softmax

    @property
    def output_names(self) -> tuple[str, ...]: ...

    @property
    def holdout(self) -> pd.DataFrame | None:
        """Rows of the source collections the run never trained on; None if none held out."""

    @property
    def provenance(self) -> dict | None:
        """What the images were (``dermnet.data.provenance.describe_images``), saved as the
        run's ``data.json``; None where the task does not record it."""

    @property
    def num_training(self) -> int: ...

    def describe(self) -> str:
        """One line for the log: real or SYNTHETIC, the folder, the split sizes."""

    def clinical(self, frame: pd.DataFrame, config: Config):
        """The clinical feature matrix of ``frame``'s rows, or None when the run uses none."""

    def targets(self, frame: pd.DataFrame):
        """What the model learns for ``frame``'s rows (class indices, or task targets)."""

    def build_model(self, config: Config):
        """The untrained Keras model of ``config`` for this data."""

    def make_loss(self, config: Config):
        """The Keras loss the model is trained with."""

    def make_metrics(self) -> list:
        """The Keras metrics logged each epoch (``history.csv``, TensorBoard)."""

    def class_weights(self, config: Config) -> dict[int, float] | None:
        """Per-class loss weights of ``config.data.sampling``, or None."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One entry of the task table: how runs of this task are set up, named and scored."""

    name: str                    # config.data.task
    summary: str                 # one line for --help
    data_module: str             # module with ``prepare_run_data(config, workdir, log)``
    default_preset: str          # dermnet.config preset when none is given
    multi_task: bool             # sigmoid tasks (per-task report) instead of one softmax
    fine_tunes: bool             # two-phase transfer learning when pretrained weights load
    run_files: tuple[str, ...]   # files an evaluation needs in the run directory
    describe_model: Callable[[Config], str]
    default_out: Callable[[Config], Path]
    check_config: Callable[[Config], None] | None = None  # fails fast on a bad config

    def prepare(self, config: Config, workdir: Path, log=print) -> RunData:
        """Load the dataset and write (or, on resume, re-read) the run's split files."""
        return importlib.import_module(self.data_module).prepare_run_data(config, workdir, log)


def _describe_classifier(config: Config) -> str:
    height, width = config.data.image_size
    return (f"{config.model.backbone} {height}x{width}, clinical "
            f"{'on' if config.data.clinical else 'off'}, fold {config.data.fold}")


def _classifier_out(config: Config) -> Path:
    height, width = config.data.image_size
    kind = "clinical" if config.data.clinical else "image"
    return Path("runs") / f"{config.model.backbone}-{height}x{width}-{kind}-fold{config.data.fold}"


def _check_classifier(config: Config) -> None:
    from dermnet.models.backbones import get_backbone

    get_backbone(config.model.backbone)  # a typo fails before any folder is made


def _describe_photo_model(config: Config) -> str:
    height, width = config.data.image_size
    return f"VGG16-{config.model.variant.upper()} {height}x{width}, clinical photos"


def _photo_out(config: Config) -> Path:
    version = ("cropped" if config.data.crop_dir else "original") + (
        "-balanced" if config.data.sampling == "balanced" else "")
    return Path("runs") / f"photos-vgg16{config.model.variant}-{version}"


DEFAULT_TASK = "ham10000"  # runs whose config names no task (older metrics.json files too)
TASKS: dict[str, Task] = {task.name: task for task in (
    Task("ham10000", "seven dermoscopic classes (HAM10000), study 1",
         "dermnet.runs.ham10000", default_preset="default", multi_task=False, fine_tunes=True,
         run_files=("splits.csv", "model.keras", "clinical_encoding.json"),
         describe_model=_describe_classifier, default_out=_classifier_out,
         check_config=_check_classifier),
    Task("clinical-photos", "multi-task binary diagnosis of clinical photographs, study 2",
         "dermnet.runs.photos", default_preset="photos", multi_task=True, fine_tunes=False,
         run_files=("splits.csv", "model.keras"),
         describe_model=_describe_photo_model, default_out=_photo_out),
)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def prepare_run_data(config: Config, workdir: Path, log=print) -> RunData:
    """The run data of ``config``'s task for the run directory ``workdir``."""
    return get_task(config.data.task).prepare(config, workdir, log)
