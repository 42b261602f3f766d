"""Resumable training state: the per-epoch history file, the best-model keeper, the epoch
seeds and the atomic backup.

A run can be killed at any instant (SIGKILL included). Everything here is written with
``dermnet.runs.atomic.write_atomic``, so a file is either the old or the new version,
never half-written; and every piece of state a resumed run needs (best value so far,
epochs without improvement, history rows) is on disk, so a resumed run makes exactly the
decisions an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from dermnet.runs.atomic import weights_bytes, write_atomic, write_json_atomic

BACKUP_METADATA = "training_metadata.json"  # names the committed backup (epoch, weights file)


class HistoryFile(keras.callbacks.Callback):
    """``history.csv``: one row per epoch (0-based ``epoch`` column), rewritten atomically.

    Rows are keyed by epoch, so an epoch repeated after a resume replaces its earlier row
    instead of appearing twice. Place after callbacks that add to ``logs``.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        rows = pd.read_csv(self.path) if self.path.exists() else pd.DataFrame({"epoch": []})
        row = {"epoch": epoch} | {key: float(value) for key, value in (logs or {}).items()}
        rows = rows[rows["epoch"] != epoch]
        rows = pd.concat([rows, pd.DataFrame([row])], ignore_index=True).sort_values("epoch")
        rows["epoch"] = rows["epoch"].astype(int)
        write_atomic(self.path, lambda target: rows.to_csv(target, index=False))


class BestModelKeeper(keras.callbacks.Callback):
    """Keeps the weights of the best epoch by ``monitor`` and stops after ``patience`` epochs
    without improvement (0 = never stop early).

    The state after every epoch is kept in ``state_path``, keyed by epoch: an epoch re-run
    after a resume starts from the state the previous epoch left, so it is never counted
    twice, whatever instant the kill came at.
    """

    def __init__(self, weights_path, state_path, monitor: str, patience: int = 0):
        super().__init__()
        self.weights_path = Path(weights_path)
        self.state_path = Path(state_path)
        self.monitor = monitor
        self.patience = patience
        self.higher_is_better = not monitor.endswith("loss")
        self.states: dict[str, dict] = {}

    def on_train_begin(self, logs=None):
        self.states = _read_states(self.state_path)

    def state_before(self, epoch: int) -> dict:
        """The state left by the latest epoch before ``epoch`` (the initial one if none)."""
        return _state_before(self.states, epoch)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"monitored metric {self.monitor!r} is not in the logs "
                           f"({', '.join(sorted(logs or {}))})")
        state = self.state_before(epoch)
        if self._improves(float(value), state["best"]):
            write_atomic(self.weights_path, self.model.save_weights,
                         weights_bytes(self.model))
            state.update(best=float(value), best_epoch=epoch, wait=0)
        else:
            state["wait"] += 1
        if self.patience and state["wait"] >= self.patience:
            state["stopped_early"] = True
            self.model.stop_training = True
        self.states = {key: item for key, item in self.states.items() if int(key) < epoch}
        self.states[str(epoch)] = state
        write_json_atomic(self.state_path, self.states)

    def _improves(self, value: float, best) -> bool:
        if math.isnan(value):
            return False
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


def _state_before(states: dict, epoch: int) -> dict:
    earlier = [int(key) for key in states if int(key) < epoch]
    if not earlier:
        return {"best": None, "best_epoch": None, "wait": 0, "stopped_early": False}
    return dict(states[str(max(earlier))])


def read_best_state(state_path: str | Path) -> dict:
    """The keeper's state after the last recorded epoch (best value, epoch, wait, stop)."""
    return _state_before(_read_states(Path(state_path)), 1 << 30)


def _read_states(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        states = json.loads(path.read_text())
        if not isinstance(states, dict):
            raise ValueError("expected an object keyed by epoch")
        for key in states:
            int(key)
        return states
    except ValueError as error:
        raise ValueError(f"{path}: unreadable best-model state ({error}); remove the run's "
                         "state/ folder to restart it, or use --overwrite") from None


class EpochSeeds(keras.callbacks.Callback):
    """Sets every random-seed state in the model (dropout, clinical masking) from (seed,
    epoch) when an epoch begins.

    Keras does not save seed-generator states with the weights, so a resumed run would
    otherwise redraw epoch k's dropout masks from the states of epoch 0.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [variable for variable in self.model.variables
                  if variable.path.endswith("seed_generator_state")]
        for index, state in enumerate(states):
            value = np.array([self.seed * 1_000_003 + epoch, index], dtype=state.dtype)
            state.assign(value)



class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore with a kill-proof commit.

    Keras writes the weights file in place and then the epoch number, so a kill can leave a
    half-written file, or new weights beside an old epoch number. Here each backup is a new
    weights file written under a temporary name, and the metadata naming it (epoch and file)
    is the atomic commit: a resume always loads a complete pair.
    """

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        weights = backup / f"epoch-{self._current_epoch}.weights.h5"
        write_atomic(weights, lambda target: self.model.save_weights(target, overwrite=True),
                     weights_bytes(self.model))
        write_json_atomic(backup / BACKUP_METADATA, {
            "epoch": self._current_epoch, "batch": self._last_batch_seen,
            "weights": weights.name})
        for stale in backup.glob("epoch-*.weights.h5"):
            if stale != weights:
                stale.unlink()

    def on_train_end(self, logs=None):
        """Keep the backup: the caller removes it once the phase's result is committed, so
        a kill between the end of ``fit`` and that commit loses nothing."""

    def _load_model(self):
        if read_backup_metadata(self.backup_dir) is not None:
            self.model._initial_epoch = load_backup(self.model, self.backup_dir)


def load_backup(model, backup_dir: str | Path) -> int:
    """Load the committed backup (weights and optimizer state) into ``model``; returns the
    number of epochs it had completed."""
    metadata = read_backup_metadata(backup_dir)
    if metadata is None:
        raise FileNotFoundError(f"{backup_dir}: no committed backup")
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # before loading its state
    model.load_weights(Path(backup_dir) / metadata["weights"])
    return metadata["epoch"]


def read_backup_metadata(backup_dir: str | Path) -> dict | None:
    """The committed backup's ``{"epoch", "batch", "weights"}``, or None if there is none."""
    path = Path(backup_dir) / BACKUP_METADATA
    if not path.exists():
        return None
    try:
        metadata = json.loads(path.read_text())
        return {"epoch": int(metadata["epoch"]), "batch": metadata.get("batch"),
                "weights": str(metadata["weights"])}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: unreadable resume metadata ({error}); remove the run's "
                         "state/ folder to restart it, or use --overwrite") from None
