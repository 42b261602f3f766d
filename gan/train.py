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
weights. The checkpoints are ``gan.checkpoints``', the progress lines, TensorBoard and grids
``gan.monitoring``'s; the folder's lock and guard are the classifier's
(``dermnet.runs.folder``). TensorFlow-specific (tf.distribute, tf.summary).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import tensorflow as tf

from dermnet.data.clinical import fit_clinical_encoder, load_clinical_encoder
from dermnet.runs.atomic import write_atomic, write_json_atomic
from dermnet.runs.folder import FINISHED, RunExistsError, hold_run_dir, prepare_run_dir
from dermnet.runs.strategy import describe_strategy, enable_determinism, make_strategy
from gan.checkpoints import (
    CLINICAL_ENCODER,
    GENERATOR,
    REAL_METADATA,
    Checkpointer,
    load_arrays,
    optimizer_weights,
    read_commit,
    save_checkpoint,
)
from gan.clinical import ClinicalTable, make_clinical_table, save_real_metadata
from gan.config import GanConfig, check_gan_config, load_gan_config, save_gan_config
from gan.data import GanData, build_stage_dataset, load_gan_data
from gan.model import GanNetworks, GrowthTracker, InfoGAN
from gan.monitoring import Reporter, write_grid
from gan.schedule import StagePlan, plan_stages, stage_boundaries


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
    for stage in plan_stages(config.schedule)[first:]:
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
        compile_stage_model(model, config)
    if resume is not None:  # the stage's optimizer states, saved mid-stage
        load_arrays(workdir / "state" / resume["file"], optimizer_weights(model))
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
    write_grid(model, config, stage, images_seen, workdir, writer)
    save_checkpoint(workdir / "state", networks, None, images_seen, stage.index,
                    name=f"stage-{stage.index:02d}-{stage.name.replace(' ', '-')}")
    return images_seen


def compile_stage_model(model: InfoGAN, config: GanConfig) -> None:
    training = config.training

    def adam():
        return keras.optimizers.Adam(config.schedule.learning_rate, beta_1=training.beta_1,
                                     beta_2=training.beta_2, epsilon=training.epsilon)

    model.compile(adam(), adam(), critic_steps=training.critic_steps,
                  gradient_weight=training.gp_weight, drift_weight=training.drift,
                  info_weight=training.info_weight, average_decay=training.ema,
                  label_weight=training.label_weight,
                  continuous_weight=training.continuous_weight)


def _finish(networks: GanNetworks, config: GanConfig, workdir: Path, images_seen: int,
            seconds: float, log) -> dict:
    """Save the final stage's average generator and critic; write ``finished.json``."""
    final = config.network.final_resolution
    generator = networks.average_generator.build(final, False)
    discriminator = networks.discriminator.build(final, False)
    write_atomic(workdir / GENERATOR, generator.save)
    write_atomic(workdir / "discriminator.keras", discriminator.save)
    summary = {"images_seen": images_seen, "final_resolution": final,
               "stages": len(plan_stages(config.schedule)),
               "seconds_this_session": round(seconds, 1)}
    write_json_atomic(workdir / FINISHED, summary)
    log(f"finished after {images_seen} images; generator: {workdir / 'generator.keras'}")
    return summary
