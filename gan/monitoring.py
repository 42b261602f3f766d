"""What a GAN run shows while it trains: a progress line and TensorBoard scalars every
``training.report_every_images`` images, and the average generator's class grid (one row
per class code) at the end of every stage, in TensorBoard and as ``grids/stage-RxR.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dermnet.runs.atomic import write_atomic
from gan.config import GanConfig
from gan.model import GrowthTracker, InfoGAN, make_grid_codes
from gan.schedule import StagePlan

GRID_MIN_SIDE = 32  # grid samples are enlarged (nearest neighbour) to at least this side


class Reporter(keras.callbacks.Callback):
    """Every ``every_images`` images and at the stage's end: one progress line and the
    TensorBoard scalars at step = images seen, each the mean since the previous report
    (the metric trackers are reset after each report)."""

    def __init__(self, tracker: GrowthTracker, writer, every_images: int, stage: StagePlan,
                 steps: int, log=print):  # steps: this session's steps of the stage
        super().__init__()
        self.tracker = tracker
        self.writer = writer
        self.every_images = every_images
        self.stage = stage
        self.steps = steps
        self.log = log
        self._since = (tracker.images_seen, time.perf_counter())

    def on_train_batch_end(self, batch, logs=None):
        seen = self.tracker.images_seen
        if seen // self.every_images > self._since[0] // self.every_images or \
                batch + 1 == self.steps:
            self._report({name: float(value) for name, value in (logs or {}).items()})

    def _report(self, values: dict) -> None:
        seen, (before, started) = self.tracker.images_seen, self._since
        rate = (seen - before) / max(time.perf_counter() - started, 1e-9)
        schedule = {"fade_in": float(self.model.fade_in.numpy()),
                    "learning_rate": float(self.model.generator_optimizer.learning_rate),
                    "resolution": self.stage.resolution, "images_per_second": rate}
        with self.writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(f"losses/{name}", value, step=seen)
            for name, value in schedule.items():
                tf.summary.scalar(f"schedule/{name}", value, step=seen)
        self.writer.flush()
        self.log(format_progress(self.stage, seen, values | schedule))
        for tracker in self.model.metrics:
            tracker.reset_state()
        self._since = (seen, time.perf_counter())


def format_progress(stage: StagePlan, seen: int, values: dict) -> str:
    """One line: stage, images seen (of the stage's end), fade-in, losses, rate, speed."""
    shown = ("critic_loss", "generator_loss", "wasserstein_distance", "gradient_penalty",
             "real_class_loss", "info_categorical", "info_continuous", "info_clinical")
    parts = [f"{stage.name:>14}", f"images {seen}/{stage.end}", f"alpha {values['fade_in']:.2f}"]
    parts += [f"{name} {values[name]:.3f}" for name in shown if name in values]
    parts += [f"lr {values['learning_rate']:.1e}", f"{values['images_per_second']:.0f} img/s"]
    return "  ".join(parts)


def render_class_grid(images: np.ndarray, rows: int, gap: int = 2) -> np.ndarray:
    """float [rows * columns, R, R, 3] in [-1, 1] -> one uint8 picture, row-major, a row per
    class, each sample enlarged to at least GRID_MIN_SIDE pixels, black gaps between."""
    pixels = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    scale = max(1, GRID_MIN_SIDE // images.shape[1])
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)  # [N, sR, sR, 3]
    columns, side = len(pixels) // rows, pixels.shape[1]
    grid = np.zeros((rows * (side + gap) - gap, columns * (side + gap) - gap, 3), np.uint8)
    for index, image in enumerate(pixels):
        top, left = (index // columns) * (side + gap), (index % columns) * (side + gap)
        grid[top:top + side, left:left + side] = image
    return grid


def write_grid(model: InfoGAN, config: GanConfig, stage: StagePlan, images_seen: int,
                workdir: Path, writer) -> None:
    """The average generator's class grid: TensorBoard image and PNG."""
    codes = make_grid_codes(config.network, config.training.grid_columns, config.training.seed,
                            model.clinical)
    images = model.sample(codes, float(model.fade_in.numpy()))
    grid = render_class_grid(images, config.network.num_classes)
    with writer.as_default():
        tf.summary.image("class_grid", grid[None], step=images_seen)
    writer.flush()
    folder = workdir / "grids"
    folder.mkdir(exist_ok=True)
    name = f"stage-{stage.resolution}x{stage.resolution}{'-fade' if stage.fade else ''}.png"
    png = tf.io.encode_png(grid).numpy()
    write_atomic(folder / name, lambda target: Path(target).write_bytes(png))
