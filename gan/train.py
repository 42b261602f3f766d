"""One GAN run: ``train_gan(config, workdir)`` grows the InfoGAN stage by stage into a folder.

    workdir/
      config.json            the run's GanConfig
      real_metadata.csv      the training rows: image_id, dx, age, sex, localization (age
                             empty when missing); ``gan.clinical.load_real_metadata`` reads it
      clinical_encoder.json  with data.clinical: the age/sex/site encoding fitted on those
                             rows (``dermnet.data.clinical.load_clinical_encoder``)
      state/                 resume state: checkpoint.json (the commit) names the latest
                             checkpoint-<images>.npz; stage-<k>-<R>x<R>-<phase>.npz keep the
                             networks as each stage ended
      tb/train/              TensorBoard: scalars by images seen, a class grid per stage
      grids/stage-RxR.png    the average generator's class grid (one row per class code) at
                             the end of each resolution (stage-RxR-fade.png: its fade-in)
      generator.keras        the average (EMA) generator of the final stage, for sampling
      discriminator.keras    the final critic with its Q head
      finished.json          written last: the run is complete

Stages follow ``gan.schedule.stage_boundaries``; each gets fresh models built on the shared
networks (weights carry over) and fresh Adam states (as Karras et al. reset theirs at every
change of level of detail). A run killed at any instant and started again with the same
command resumes from its last checkpoint: the networks' weights, the stage's optimizer
states and the images seen are on disk, and everything random derives from (seed, images
seen), so with ``training.deterministic`` on a CPU it ends with an uninterrupted run's
weights. TensorFlow-specific (tf.distribute, tf.summary).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dermnet.data.clinical import fit_clinical_encoder, load_clinical_encoder
from dermnet.runs.atomic import write_atomic, write_json_atomic
from dermnet.runs.folder import FINISHED, RunExistsError, hold_run_dir, prepare_run_dir
from dermnet.runs.strategy import describe_strategy, enable_determinism, make_strategy
from gan.clinical import ClinicalTable, make_clinical_table, save_real_metadata
from gan.config import GanConfig, check_gan_config, load_gan_config, save_gan_config
from gan.data import GanData, build_stage_dataset, load_gan_data
from gan.model import GanNetworks, GrowthTracker, InfoGAN, make_grid_codes
from gan.schedule import FADE, stage_boundaries, total_images

COMMIT = "checkpoint.json"
REAL_METADATA = "real_metadata.csv"
CLINICAL_ENCODER = "clinical_encoder.json"
GRID_MIN_SIDE = 32  # grid samples are enlarged (nearest neighbour) to at least this side


@dataclasses.dataclass(frozen=True)
class StagePlan:
    index: int          # position in stage_boundaries()
    resolution: int
    fade: bool          # a new block fades in
    batch_size: int     # global batch size
    end: int            # images seen when the stage ends

    @property
    def name(self) -> str:
        return f"{self.resolution}x{self.resolution} {'fade' if self.fade else 'stable'}"


def plan_stages(config: GanConfig) -> list[StagePlan]:
    schedule = config.schedule
    boundaries = stage_boundaries(schedule)
    ends = [boundary.start for boundary in boundaries[1:]] + [total_images(schedule)]
    return [StagePlan(index, boundary.resolution, boundary.phase == FADE,
                      schedule.batch_sizes[boundary.resolution], end)
            for index, (boundary, end) in enumerate(zip(boundaries, ends))]


def train_gan(config: GanConfig, workdir: str | Path, *, overwrite: bool = False,
              log=print) -> dict:
    """Train ``config`` into ``workdir`` (resuming it if interrupted); returns the summary
    written to ``finished.json``."""
    strategy = make_strategy(config.training.strategy)  # before TensorFlow runs an op
    check_gan_config(config)
    _check_batches(config, strategy.num_replicas_in_sync)
    with hold_run_dir(Path(workdir)) as workdir:  # one process per folder
        return _train_gan_locked(config, workdir, strategy, overwrite, log)


def _train_gan_locked(config: GanConfig, workdir: Path, strategy, overwrite: bool,
                      log) -> dict:
    _prepare_workdir(workdir, config, overwrite)
    _set_up_runtime(config)
    log(f"run {workdir}: InfoGAN {config.schedule.start_resolution}x"
        f"{config.schedule.start_resolution} -> {config.network.final_resolution}x"
        f"{config.network.final_resolution}; {describe_strategy(strategy)}")
    data = load_gan_data(config, log)
    log(data.describe())
    clinical = _prepare_clinical(config, data, workdir, log)
    start = time.perf_counter()
    with strategy.scope():
        networks = GanNetworks(config.network, clinical)
    commit = read_commit(workdir / "state")
    images_seen, first = _restore(networks, commit, workdir / "state", log)
    writer = tf.summary.create_file_writer(str(workdir / "tb" / "train"))
    for stage in plan_stages(config)[first:]:
        resume = commit if commit and commit["stage_index"] == stage.index else None
        images_seen = _run_stage(stage, images_seen, networks, config, data, strategy,
                                 workdir, writer, resume, log)
    writer.close()
    return _finish(networks, config, workdir, images_seen, time.perf_counter() - start, log)


def _check_batches(config: GanConfig, replicas: int) -> None:
    schedule = config.schedule
    for resolution in schedule.resolutions:
        batch = schedule.batch_sizes[resolution]
        if batch % replicas or batch > schedule.images_per_phase:
            raise ValueError(f"batch size {batch} at {resolution}x{resolution} must divide "
                             f"by the {replicas} replica(s) and be at most "
                             f"schedule.images_per_phase ({schedule.images_per_phase})")


def _prepare_workdir(workdir: Path, config: GanConfig, overwrite: bool) -> None:
    prepare_run_dir(workdir, config, overwrite, load_gan_config, save_gan_config)


def _prepare_clinical(config: GanConfig, data: GanData, workdir: Path,
                      log) -> ClinicalTable | None:
    """Write ``real_metadata.csv``; with ``data.clinical``, fit the encoder on the training
    rows, write it (a resumed run refits the same one; a different one means the data
    changed under the run) and return the table the codes are sampled from."""
    write_atomic(workdir / REAL_METADATA, lambda target: save_real_metadata(data.frame, target))
    if not config.data.clinical:
        return None
    encoder = fit_clinical_encoder(data.frame)
    path = workdir / CLINICAL_ENCODER
    if path.exists() and load_clinical_encoder(path) != encoder:
        raise RunExistsError(f"{path} differs from the encoding of the current training rows "
                             "(the data changed); use --overwrite or choose another --out")
    write_atomic(path, encoder.save_json)
    log(f"clinical codes: {encoder.num_features} entries (age mean {encoder.age_mean:.1f}, "
        f"std {encoder.age_std:.1f}), sampled from real rows of each class")
    return make_clinical_table(encoder.transform(data.frame), data.labels,
                               config.network.num_classes)


def _set_up_runtime(config: GanConfig) -> None:
    # Fixes the networks' initial weights; everything later is seeded explicitly.
    keras.utils.set_random_seed(config.training.seed)
    if config.training.deterministic:
        enable_determinism()


def _restore(networks: GanNetworks, commit: dict | None, state: Path, log) -> tuple[int, int]:
    """Load the committed checkpoint's networks; (images seen, first stage to run)."""
    if commit is None:
        return 0, 0
    load_arrays(state / commit["file"], networks.weights)
    log(f"resuming from {commit['images_seen']} images seen (stage {commit['stage_index']}"
        f"{', complete' if commit['complete'] else ''})")
    return commit["images_seen"], commit["stage_index"] + int(commit["complete"])


def _run_stage(stage: StagePlan, images_seen: int, networks: GanNetworks, config: GanConfig,
               data: GanData, strategy, workdir: Path, writer, resume: dict | None,
               log) -> int:
    """Train one stage from ``images_seen``; write its grid and checkpoint; images seen."""
    training = config.training
    with strategy.scope():
        model = networks.build_stage(stage.resolution, stage.fade, training.seed)
        _compile(model, config)
    if resume is not None:  # the stage's optimizer states, saved mid-stage
        load_arrays(workdir / "state" / resume["file"], _optimizer_weights(model))
    steps = max(0, math.ceil((stage.end - images_seen) / stage.batch_size))
    count = len(stage_boundaries(config.schedule))
    log(f"stage {stage.index + 1}/{count}: {stage.name}, images {images_seen}-{stage.end}, "
        f"{steps} steps of {stage.batch_size}")
    if steps:
        tracker = GrowthTracker(config.schedule, images_seen, stage.batch_size)
        labels = data.labels if training.label_weight else None
        dataset = build_stage_dataset(data.images_at(stage.resolution), training.seed,
                                      images_seen, steps, stage.batch_size, config.data.flips,
                                      labels, config.network.num_classes)
        callbacks = [tracker, Reporter(tracker, writer, training.report_every_images,
                                       stage, steps, log),
                     Checkpointer(tracker, workdir / "state", networks, stage.index,
                                  training.checkpoint_every_images)]
        model.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=callbacks,
                  shuffle=False, verbose=0)
        images_seen = tracker.images_seen
    _write_grid(model, config, stage, images_seen, workdir, writer)
    save_checkpoint(workdir / "state", networks, None, images_seen, stage.index,
                    name=f"stage-{stage.index:02d}-{stage.name.replace(' ', '-')}")
    return images_seen


def _compile(model: InfoGAN, config: GanConfig) -> None:
    training = config.training

    def adam():
        return keras.optimizers.Adam(config.schedule.learning_rate, beta_1=training.beta_1,
                                     beta_2=training.beta_2, epsilon=training.epsilon)

    model.compile(adam(), adam(), critic_steps=training.critic_steps,
                  gradient_weight=training.gp_weight, drift_weight=training.drift,
                  info_weight=training.info_weight, average_decay=training.ema,
                  label_weight=training.label_weight,
                  continuous_weight=training.continuous_weight)


def _optimizer_weights(model: InfoGAN) -> dict[str, list]:
    return {"generator_optimizer": model.generator_optimizer.variables,
            "discriminator_optimizer": model.discriminator_optimizer.variables}


# --- checkpoints ------------------------------------------------------------------------------


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
    groups = dict(networks.weights) | (_optimizer_weights(model) if model else {})
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


# --- monitoring -------------------------------------------------------------------------------


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


def _write_grid(model: InfoGAN, config: GanConfig, stage: StagePlan, images_seen: int,
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


def _finish(networks: GanNetworks, config: GanConfig, workdir: Path, images_seen: int,
            seconds: float, log) -> dict:
    """Save the final stage's average generator and critic; write ``finished.json``."""
    final = config.network.final_resolution
    generator = networks.average_generator.build(final, False)
    discriminator = networks.discriminator.build(final, False)
    write_atomic(workdir / "generator.keras", generator.save)
    write_atomic(workdir / "discriminator.keras", discriminator.save)
    summary = {"images_seen": images_seen, "final_resolution": final,
               "stages": len(plan_stages(config)),
               "seconds_this_session": round(seconds, 1)}
    write_json_atomic(workdir / FINISHED, summary)
    log(f"finished after {images_seen} images; generator: {workdir / 'generator.keras'}")
    return summary
