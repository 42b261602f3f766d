"""Learning-rate schedules (keras-only, serialisable): linear warm-up, then cosine or flat."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="dermnet")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then ``peak`` (constant) or a
    cosine decay to 0 at ``total_steps``. The step is the optimizer's iteration count, which
    is saved with its state, so a resumed run continues on the same curve."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0,
                 decay: str = "cosine"):
        if decay not in ("cosine", "constant"):
            raise ValueError(f"decay must be 'cosine' or 'constant', got {decay!r}")
        self.peak = float(peak)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.decay = decay

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.minimum(1.0, (step + 1.0) / max(1.0, float(self.warmup_steps)))
        if self.decay == "constant":
            return self.peak * warmup
        span = max(1.0, float(self.total_steps - self.warmup_steps))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        return self.peak * ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay}
