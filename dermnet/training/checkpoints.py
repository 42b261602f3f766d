"""Resumable run state: atomic writes, the per-epoch history file, and the best-model keeper.

A run can be killed at any instant (SIGKILL included). Everything here is written to a
temporary file and renamed into place, so a file is either the old or the new version,
never half-written; and every piece of state a resumed run needs (best value so far,
epochs without improvement, history rows) is on disk, so a resumed run makes exactly the
decisions an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd

FINISHED = "finished.json"  # written last by every run: the run is complete


class RunExistsError(RuntimeError):
    """The run directory holds a finished run, or a run of a different config."""


def prepare_run_dir(workdir: Path, config, overwrite: bool, load_config, save_config) -> None:
    """Create ``workdir`` (and its ``state/``), refuse to clobber a finished run or an
    unfinished run of another config (``load_config(path)`` reads one back), then save
    ``config`` atomically with ``save_config(config, path)``. ``overwrite`` wipes it first."""
    config_path = workdir / "config.json"
    if overwrite and workdir.exists():
        shutil.rmtree(workdir)
    if (workdir / FINISHED).exists():
        raise RunExistsError(f"{workdir} already holds a finished run; use --overwrite to "
                             "replace it or choose another --out")
    if config_path.exists() and load_config(config_path) != config:
        raise RunExistsError(f"{workdir} holds an unfinished run of a different config; "
                             "use --overwrite to discard it or choose another --out")
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    write_atomic(config_path, lambda target: save_config(config, target))


def write_atomic(path: str | Path, writer) -> None:
    """Call ``writer(temporary_path)``, then rename the result onto ``path``."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{''.join(path.suffixes)}")
    try:
        writer(partial)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def write_json_atomic(path: str | Path, payload) -> None:
    write_atomic(path, lambda target: Path(target).write_text(json.dumps(payload, indent=2)))


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
        if self.state_path.exists():
            self.states = json.loads(self.state_path.read_text())

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
            write_atomic(self.weights_path, self.model.save_weights)
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
    path = Path(state_path)
    states = json.loads(path.read_text()) if path.exists() else {}
    return _state_before(states, 1 << 30)


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


BACKUP_METADATA = "training_metadata.json"


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
        write_atomic(weights, lambda target: self.model.save_weights(target, overwrite=True))
        write_json_atomic(backup / BACKUP_METADATA, {
            "epoch": self._current_epoch, "batch": self._last_batch_seen,
            "weights": weights.name})
        for stale in backup.glob("epoch-*.weights.h5"):
            if stale != weights:
                stale.unlink()

    def _load_model(self):
        metadata = read_backup_metadata(self.backup_dir)
        if metadata is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # before loading
        self.model.load_weights(Path(self.backup_dir) / metadata["weights"])
        self.model._initial_epoch = metadata["epoch"]


def read_backup_metadata(backup_dir: str | Path) -> dict | None:
    """The committed backup's ``{"epoch", "batch", "weights"}``, or None if there is none."""
    path = Path(backup_dir) / BACKUP_METADATA
    return json.loads(path.read_text()) if path.exists() else None
