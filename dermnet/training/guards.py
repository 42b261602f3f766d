"""Stop a diverging run: a non-finite loss or weight ends training with a clear error.

Keras trains on through ``nan`` (``--learning-rate nan`` used to give a "finished" run whose
every probability was ``nan``). ``StopOnNonFinite`` raises ``NonFiniteTrainingError`` at the
first batch whose loss is not finite, and after any epoch that leaves a non-finite weight,
before the epoch is backed up or recorded: the run is never marked finished, and its last
good epoch stays in the resume backup.
"""

from __future__ import annotations

import math

import keras
import numpy as np


class NonFiniteTrainingError(RuntimeError):
    """Training produced a non-finite loss or weight."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Place first, so that no later callback records a diverged epoch."""

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(np.asarray(loss))):
            self._stop(f"the training loss became {float(np.asarray(loss))} at epoch "
                       f"{self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            if name.endswith("loss") and not math.isfinite(float(np.asarray(value))):
                self._stop(f"{name} became {float(np.asarray(value))} at epoch {epoch + 1}")
        for variable in self.model.weights:  # BatchNorm statistics included
            if not np.isfinite(keras.ops.convert_to_numpy(variable)).all():
                self._stop(f"weight {variable.path} became non-finite at epoch {epoch + 1}")

    @staticmethod
    def _stop(what: str):
        raise NonFiniteTrainingError(
            f"training diverged: {what}. The run is not marked finished; its last good "
            "epoch is kept for a resume. Lower the learning rate (start again with "
            "--overwrite) or check the data.")
