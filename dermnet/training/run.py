"""One training run: ``train_and_evaluate(config, workdir)`` from a config to a run directory.

    workdir/
      config.json  clinical_encoding.json  splits.csv     what the run was and saw
      data.json                                            the images: real or SYNTHETIC,
                                                           source sizes, upsampling
      history.csv                                          one row per epoch
      tb/                                                  TensorBoard logs
      model.keras  saved_model/                            the best epoch's model
      finished.json                                        written last: the run is complete
      state/                                               resume state (backup, best weights)

A run killed at any instant and started again with the same config resumes from its last
completed epoch and ends where an uninterrupted run would (identical weights on CPU with
``training.deterministic``): the backup holds weights and optimizer state, every epoch's
shuffle and augmentation derive from (seed, epoch), and the early-stopping state is on disk.
TensorFlow-specific (tf.data, tf.distribute).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from dermnet.compat import multiworker_fit
from dermnet.config import Config, config_to_dict, load_config, save_config
from dermnet.data.provenance import describe_provenance
from dermnet.models.classifier import set_batchnorm_momentum, set_batchnorm_synchronized
from dermnet.runs.atomic import (
    DiskWriteError,
    ensure_free_space,
    weights_bytes,
    write_atomic,
    write_json_atomic,
)
from dermnet.runs.datasets import make_evaluation_dataset, make_training_dataset
from dermnet.runs.folder import FINISHED, hold_run_dir, prepare_run_dir
from dermnet.runs.strategy import describe_strategy, enable_determinism, is_chief, make_strategy
from dermnet.runs.tasks import RunData, get_task, prepare_run_data
from dermnet.training import callbacks as monitoring
from dermnet.training.checkpoints import (
    AtomicBackupAndRestore,
    BestModelKeeper,
    EpochSeeds,
    HistoryFile,
    load_backup,
    read_backup_metadata,
    read_best_state,
)
from dermnet.training.guards import StopOnNonFinite
from dermnet.training.schedules import WarmupSchedule


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str                # "head" (backbone frozen) or "main"
    first_epoch: int         # 0-based, inclusive
    last_epoch: int          # exclusive
    backbone: str            # "frozen", "top" (top layers, BatchNorm frozen) or "all"
    learning_rate: float     # peak learning rate of the phase
    warmup_epochs: int       # linear warm-up at the start of the phase


def plan_phases(config: Config) -> list[Phase]:
    """Two-phase transfer learning from pretrained weights, one phase from scratch."""
    training = config.training
    # Two-phase fine-tuning is the classifier's; the clinical-photo variants freeze their
    # own layers as the study did.
    pretrained = config.model.weights is not None and get_task(config.data.task).fine_tunes
    frozen = min(training.freeze_epochs, training.epochs - 1) if pretrained else 0
    phases = []
    if frozen > 0:
        phases.append(Phase("head", 0, frozen, "frozen", training.head_learning_rate, 0))
    phases.append(Phase("main", frozen, training.epochs, "top" if pretrained else "all",
                        training.learning_rate, training.warmup_epochs))
    return phases


def train_and_evaluate(config: Config, workdir: str | Path, *, overwrite: bool = False,
                       log=print) -> dict:
    """Train ``config`` into ``workdir`` (resuming it if interrupted); returns the summary
    written to ``finished.json``.

    The folder is held with a ``RunLock`` for the whole run: a second process on it stops
    with an error naming the holder. A run that fails before completing an epoch leaves no
    folder behind (when it created the folder), so the corrected command starts cleanly.
    """
    # First of all: multi-worker collectives must be configured before TensorFlow runs an op.
    strategy = make_strategy(config.training.strategy)
    workdir = _output_dir(Path(workdir))
    check = get_task(config.data.task).check_config
    if check is not None:
        check(config)  # a typo fails before any folder is made
    with hold_run_dir(workdir):
        return _train_locked(config, workdir, strategy, overwrite, log)


def _train_locked(config: Config, workdir: Path, strategy, overwrite: bool, log) -> dict:
    prepare_run_dir(workdir, config, overwrite, load_config, save_config, log)
    _set_up_runtime(config)
    log(f"run {workdir}: {_describe_model(config)}; {describe_strategy(strategy)}")
    data = prepare_run_data(config, workdir, log)
    log(data.describe())
    _record_provenance(data, workdir)
    start = time.perf_counter()
    model = None
    for phase in plan_phases(config):
        model = _run_phase(phase, config, data, strategy, workdir, log)
        if _best_state(workdir)["stopped_early"]:
            log(f"early stop: no {config.training.monitor} improvement for "
                f"{config.training.patience} epochs")
            break
    return _finish(model, config, data, workdir, time.perf_counter() - start, log)


def _record_provenance(data: RunData, workdir: Path) -> None:
    """data.json beside the model, and the same line in TensorBoard's text tab."""
    if data.provenance is None:  # a task that records none describes its data in the log
        return
    write_json_atomic(workdir / "data.json", data.provenance)
    monitoring.log_text(str(workdir / "tb"), "data", describe_provenance(data.provenance))


def _describe_model(config: Config) -> str:
    return get_task(config.data.task).describe_model(config)


def _output_dir(workdir: Path) -> Path:
    """Non-chief multi-worker tasks write a private copy under ``worker-K/``."""
    if is_chief():
        return workdir
    index = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    return workdir / f"worker-{index}"


def _set_up_runtime(config: Config) -> None:
    keras.utils.set_random_seed(config.training.seed)
    if config.training.deterministic:
        enable_determinism()
    if config.training.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")


def _run_phase(phase: Phase, config: Config, data: RunData, strategy, workdir: Path, log):
    state = workdir / "state"
    weights = state / f"{phase.name}.weights.h5"
    global_batch = config.data.batch_size * strategy.num_replicas_in_sync
    steps = int(np.ceil(data.num_training / global_batch))
    with strategy.scope():
        model = data.build_model(config)
        _load_previous_phase(model, phase, config, state)
        if config.training.batchnorm_momentum is not None:
            set_batchnorm_momentum(model, config.training.batchnorm_momentum)
        if config.training.sync_batchnorm and strategy.num_replicas_in_sync > 1:
            set_batchnorm_synchronized(model, True)
        _set_trainable(model, phase, config)
        _compile(model, config, data, phase, steps)
    backup = state / f"backup-{phase.name}"
    if weights.exists():  # finished in an earlier session
        model.load_weights(weights)
        shutil.rmtree(backup, ignore_errors=True)
        return model
    first = _resume_epoch(backup, phase)
    if first >= phase.last_epoch or (first > phase.first_epoch
                                     and _best_state(workdir)["stopped_early"]):
        # The phase ended in an earlier session that was stopped before committing it.
        load_backup(model, backup)
        log(f"phase '{phase.name}': ended in an earlier session (epoch {first}); committing it")
        return _commit_phase(model, weights, backup)
    log(f"phase '{phase.name}': epochs {first + 1}-{phase.last_epoch}"
        f"{' (resumed)' if first > phase.first_epoch else ''}, backbone {phase.backbone}, "
        f"lr {phase.learning_rate:g}, {steps} steps of {global_batch}")
    # The stream starts at the epoch BackupAndRestore will resume from, so that epoch k
    # trains on epoch k's batches whether or not the run was interrupted.
    training = make_training_dataset(data, config, first, phase.last_epoch, global_batch,
                                     workdir)
    validation = make_evaluation_dataset(data.validation, data, config, global_batch, workdir)
    callbacks = _make_callbacks(model, config, data, workdir, phase, training, validation)
    with multiworker_fit(model, strategy):
        model.fit(training, epochs=phase.last_epoch, initial_epoch=first,
                  steps_per_epoch=steps, validation_data=validation, callbacks=callbacks,
                  class_weight=data.class_weights(config), shuffle=False,
                  verbose=1 if sys.stdout.isatty() else 0)
    return _commit_phase(model, weights, backup)


def _commit_phase(model, weights: Path, backup: Path):
    """The phase's weights, then (never before) the resume backup goes."""
    write_atomic(weights, model.save_weights, weights_bytes(model))
    shutil.rmtree(backup, ignore_errors=True)
    return model


def _resume_epoch(backup: Path, phase: Phase) -> int:
    """First epoch still to train: the committed backup's epoch, or the phase's first."""
    metadata = read_backup_metadata(backup)
    return phase.first_epoch if metadata is None else max(phase.first_epoch, metadata["epoch"])


def _load_previous_phase(model, phase: Phase, config: Config, state: Path) -> None:
    earlier = [item for item in plan_phases(config) if item.last_epoch <= phase.first_epoch]
    if earlier:
        model.load_weights(state / f"{earlier[-1].name}.weights.h5")


def _set_trainable(model, phase: Phase, config: Config) -> None:
    from dermnet.models.classifier import freeze_backbone, unfreeze_top

    if phase.backbone == "frozen":
        freeze_backbone(model)
    elif phase.backbone == "top":
        unfreeze_top(model, config.training.unfreeze_fraction)


def _compile(model, config: Config, data, phase: Phase, steps: int) -> None:
    training = config.training
    epochs = phase.last_epoch - phase.first_epoch
    schedule = WarmupSchedule(phase.learning_rate, epochs * steps, phase.warmup_epochs * steps,
                              training.schedule)
    optimizer = _make_optimizer(training.optimizer, schedule, training.weight_decay)
    model.compile(optimizer=optimizer, loss=data.make_loss(config), jit_compile=training.jit,
                  metrics=data.make_metrics())


def _make_optimizer(name: str, schedule, weight_decay: float):
    if name == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                    weight_decay=weight_decay or None)
    return keras.optimizers.Adam(schedule)


def _make_callbacks(model, config, data: RunData, workdir: Path, phase: Phase, training,
                    validation) -> list:
    state, logs = workdir / "state", workdir / "tb"
    training_config = config.training
    callbacks = [
        StopOnNonFinite(),  # first: no later callback records a diverged epoch
        EpochSeeds(training_config.seed),
        monitoring.Throughput(config.data.batch_size * model.distribute_strategy
                              .num_replicas_in_sync),
        BestModelKeeper(state / "best.weights.h5", state / "best.json",
                        training_config.monitor, training_config.patience),
        HistoryFile(workdir / "history.csv"),
        monitoring.EpochTensorBoard(log_dir=str(logs), write_graph=False),
    ]
    if not data.multi_task:  # one softmax over classes: a confusion matrix per epoch
        callbacks.append(monitoring.ConfusionMatrixImage(str(logs), validation,
                                                         data.output_names))
    if phase.first_epoch == 0:
        callbacks.append(monitoring.AugmentedImages(str(logs), training))
        monitoring.log_hparams(str(logs), _hparams(config))
    if not sys.stdout.isatty():  # a terminal has Keras's progress bar instead
        callbacks.append(monitoring.ProgressLines(config.data.batch_size * model
                                                  .distribute_strategy.num_replicas_in_sync))
        callbacks.append(monitoring.EpochSummary())
    # Last, so that a backup is only taken once every other callback recorded the epoch.
    callbacks.append(AtomicBackupAndRestore(str(state / f"backup-{phase.name}")))
    return callbacks


# The HParams table's first columns: what tells the runs of a grid apart. Then the rest of
# the config, with where the data live and how they are cached last.
HPARAMS_FIRST = ("model.backbone", "data.image_size", "data.clinical", "data.fold",
                 "model.weights", "training.epochs", "training.learning_rate", "data.sampling")
HPARAMS_LAST = ("data.data_dir", "data.cache", "data.sources_csv", "data.crop_dir")


def _hparams(config: Config) -> dict:
    flat = {}
    for section, values in config_to_dict(config).items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()
                         if not isinstance(value, dict)})
    first = [name for name in HPARAMS_FIRST if name in flat]
    last = [name for name in HPARAMS_LAST if name in flat]
    middle = [name for name in flat if name not in first and name not in last]
    return {name: flat[name] for name in first + middle + last}


def _best_state(workdir: Path) -> dict:
    return read_best_state(workdir / "state" / "best.json")


def _finish(model, config: Config, data: RunData, workdir: Path, seconds: float, log) -> dict:
    best = _best_state(workdir)
    model.load_weights(workdir / "state" / "best.weights.h5")
    # The saved model is for inference: no optimizer, schedule or training metrics, so it
    # loads with only dermnet's layers registered (import dermnet.models.classifier).
    inference = data.build_model(dataclasses.replace(
        config, model=dataclasses.replace(config.model, weights=None)))
    inference.set_weights(model.get_weights())
    write_atomic(workdir / "model.keras", inference.save, weights_bytes(inference))
    _export_saved_model(inference, workdir / "saved_model")
    summary = {"best_epoch": best["best_epoch"] + 1, "monitor": config.training.monitor,
               "best_value": best["best"], "stopped_early": best["stopped_early"],
               "seconds_this_session": round(seconds, 1)}
    write_json_atomic(workdir / FINISHED, summary)
    log(f"best {config.training.monitor} {best['best']:.4f} at epoch {summary['best_epoch']}; "
        f"model: {workdir / 'model.keras'}")
    return summary


def _export_saved_model(model, target: Path) -> None:
    """TensorFlow SavedModel for serving (``model.export``), written beside then renamed."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    ensure_free_space(target.parent, 2 * weights_bytes(model), target)
    try:
        model.export(str(partial), format="tf_saved_model", verbose=False)
    except Exception as error:  # TensorFlow reports a failed write as one of its own errors
        shutil.rmtree(partial, ignore_errors=True)
        message = " ".join(str(error).split())[:300]
        raise DiskWriteError(errno.EIO, f"cannot write {target}: {message}") from None
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
