"""A GAN run's resume state: checkpoints of the shared networks and the stage's optimizers.

The networks outlive the per-stage models (each stage builds fresh models on them, with
fresh Adam states), so a checkpoint is the networks' variables, plus mid-stage the stage's
optimizer variables, in one ``.npz``; ``checkpoint.json`` (the commit), written last and
atomically, names the complete one. The run folder itself (lock, ``config.json``,
``finished.json``) is the classifier's: ``dermnet.runs.folder``; every file is written with
``dermnet.runs.atomic.write_atomic``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from dermnet.runs.atomic import write_atomic, write_json_atomic

if TYPE_CHECKING:  # gan.generate reads the file names without TensorFlow's training code
    from gan.model import GanNetworks, GrowthTracker, InfoGAN

COMMIT = "checkpoint.json"                   # in state/: names the complete checkpoint
REAL_METADATA = "real_metadata.csv"          # the training rows (gan.clinical)
CLINICAL_ENCODER = "clinical_encoder.json"   # with data.clinical: the fitted encoding
GENERATOR = "generator.keras"                # the final average generator, for sampling


def optimizer_weights(model: InfoGAN) -> dict[str, list]:
    return {"generator_optimizer": model.generator_optimizer.variables,
            "discriminator_optimizer": model.discriminator_optimizer.variables}


def read_commit(state: Path) -> dict | None:
    """The committed checkpoint: {images_seen, stage_index, complete, file}, or None."""
    path = state / COMMIT
    return json.loads(path.read_text()) if path.exists() else None


def save_checkpoint(state: Path, networks: GanNetworks, model: InfoGAN | None,
                    images_seen: int, stage_index: int, name: str | None = None) -> None:
    """Write the networks (and, mid-stage, ``model``'s optimizer states), then commit.

    Without ``model`` the stage is complete: its optimizer states are never needed again.
    The commit file is written last and atomically, so a resume always finds a complete
    checkpoint; older mid-stage files are deleted once it names the new one.
    """
    groups = dict(networks.weights) | (optimizer_weights(model) if model else {})
    file = state / f"{name or f'checkpoint-{images_seen:012d}'}.npz"
    write_atomic(file, lambda target: save_arrays(target, groups))
    write_json_atomic(state / COMMIT, {"images_seen": images_seen, "stage_index": stage_index,
                                       "complete": model is None, "file": file.name})
    for stale in state.glob("checkpoint-*.npz"):
        if stale != file:
            stale.unlink()


def save_arrays(path, groups: dict[str, list]) -> None:
    arrays = {f"{group}/{index}": keras.ops.convert_to_numpy(variable)
              for group, variables in groups.items() for index, variable in enumerate(variables)}
    with open(path, "wb") as stream:  # a file object: np.savez adds no suffix
        np.savez(stream, **arrays)


def load_arrays(path: Path, groups: dict[str, list]) -> None:
    """Assign each group's variables from ``path``; a missing or misshapen one raises."""
    with np.load(path) as arrays:
        for group, variables in groups.items():
            for index, variable in enumerate(variables):
                key = f"{group}/{index}"
                if key not in arrays or arrays[key].shape != tuple(variable.shape):
                    raise ValueError(f"{path}: {key} is missing or has the wrong shape; the "
                                     "checkpoint belongs to another configuration")
                variable.assign(arrays[key])


class Checkpointer(keras.callbacks.Callback):
    """Saves the run's state every ``every_images`` images (place after GrowthTracker)."""

    def __init__(self, tracker: GrowthTracker, state: Path, networks: GanNetworks,
                 stage_index: int, every_images: int):
        super().__init__()
        self.tracker = tracker
        self.state = state
        self.networks = networks
        self.stage_index = stage_index
        self.every_images = every_images
        self.last = tracker.images_seen

    def on_train_batch_end(self, batch, logs=None):
        seen = self.tracker.images_seen
        if seen // self.every_images > self.last // self.every_images:
            save_checkpoint(self.state, self.networks, self.model, seen, self.stage_index)
            self.last = seen
