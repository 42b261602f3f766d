"""Keras callbacks for training runs, and the TensorBoard HParams record of a run.

Owns `Throughput` (images/s and learning rate into the epoch logs), `EpochSummary` (one line
per epoch for non-interactive logs), `ConfusionMatrixImage` and `AugmentedImages` (images
in TensorBoard), `log_hparams` (one trial of a grid for the HParams dashboard) and the
chief-worker test they share. TensorFlow-specific: `tf.summary`, `tf.data`, `tf.distribute`.

Order in `model.fit(callbacks=[...])`: Keras hands one logs dict to the callbacks in list
order, so whatever reads a key must come after the callback that adds it:

    Throughput(batch_size)          first: adds logs["images_per_second"], ["learning_rate"]
    EpochSummary()                  after Throughput: prints those keys
    keras.callbacks.TensorBoard     after Throughput: writes train/epoch_images_per_second
    keras.callbacks.CSVLogger       after Throughput: history.csv gets both columns
    ConfusionMatrixImage, AugmentedImages, checkpoints ...   anywhere

Keras' TensorBoard callback also writes `epoch_learning_rate` itself: it overwrites the
"learning_rate" key with the same optimizer value, so the tag is written once per epoch.

Multi-worker training: every worker runs every callback, but only the chief writes images
and hparams (`is_chief=None` asks the model's strategy, see `is_chief_worker`). The image
callbacks predict without collective ops, so the chief may run them alone.
"""

import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from dermnet.runs.strategy import is_chief

# Validation scalars of Keras' TensorBoard callback compared across runs in the HParams
# dashboard; they live in the run's "validation" subfolder, hence the metric group.
HPARAMS_METRICS = ("epoch_loss", "epoch_accuracy", "epoch_balanced_accuracy", "epoch_macro_auc")


def is_chief_worker(strategy=None):
    """Whether this process should write summaries.

    With a strategy, asks it (`extended.should_save_summary`: False only on non-chief
    workers of a multi-worker strategy). Without one, reads `TF_CONFIG`: no config or task
    type "chief" -> True; "worker" index 0 -> True when the cluster has no "chief" task;
    any other worker, evaluator or parameter server -> False.
    """
    if strategy is not None:
        return bool(strategy.extended.should_save_summary)
    return is_chief()


def compute_learning_rate(optimizer):
    """The optimizer's current learning rate as a float, schedules evaluated at its step."""
    # A mixed-precision LossScaleOptimizer keeps the real rate on the optimizer it wraps.
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    rate = optimizer.learning_rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        rate = rate(optimizer.iterations)
    return float(keras.ops.convert_to_numpy(rate))


class Throughput(keras.callbacks.Callback):
    """Adds training images/s, the learning rate and the epoch's wall time to the epoch logs.

    Images/s = optimizer steps this epoch * `batch_size` / seconds from epoch start to the
    start of validation (or the epoch end), so validation time is not counted.
    `epoch_seconds` is the whole epoch, validation included: summed over history.csv it gives
    the training minutes behind each epoch's figures. A last partial
    batch counts as full: negligible for epochs of many batches. The learning rate is read at
    epoch end. Must come before TensorBoard / CSVLogger / EpochSummary in the callback list.
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size  # global batch size: all replicas together
        self._start_time = None
        self._start_step = 0
        self._training_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start_step = _optimizer_step(self.model)
        self._training_seconds = None
        self._start_time = time.perf_counter()

    def on_test_begin(self, logs=None):
        # Validation inside fit starts here; evaluate() outside fit has no epoch running.
        if self._start_time is not None and self._training_seconds is None:
            self._training_seconds = time.perf_counter() - self._start_time

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self._start_time is None:
            return
        seconds = self._training_seconds or time.perf_counter() - self._start_time
        steps = _optimizer_step(self.model) - self._start_step
        logs["images_per_second"] = steps * self.batch_size / max(seconds, 1e-9)
        logs["learning_rate"] = compute_learning_rate(self.model.optimizer)
        logs["epoch_seconds"] = time.perf_counter() - self._start_time
        self._start_time = None


def _optimizer_step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class EpochSummary(keras.callbacks.Callback):
    """Prints one line per epoch, for logs that are not a terminal (use with fit(verbose=0)).

        epoch 3/90  loss 0.812  accuracy 0.701  val_loss 0.934  ...  lr 1.0e-04  312 img/s  41.2 s

    Training metrics first (loss leading), then validation ones, then the learning rate and
    throughput when `Throughput` added them, then the wall time of the epoch including
    validation. `stream` defaults to sys.stdout as it is at print time.
    """

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream
        self._start_time = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start_time = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - (self._start_time or time.perf_counter())
        epochs = self.params.get("epochs") if self.params else None
        line = format_epoch_summary(epoch + 1, epochs, logs or {}, seconds)
        print(line, file=self.stream or sys.stdout, flush=True)


class ProgressLines(keras.callbacks.Callback):
    """Progress inside an epoch for output that is not a terminal (a log file, CI): a line
    every ``every`` seconds with the step, share done, images/s and the epoch's ETA.

        epoch 1/8: step 120/974 (12%), 45.1 img/s, ETA 5.3 min

    A terminal gets Keras's own progress bar instead. ``clock`` is for tests.
    """

    def __init__(self, batch_size: int, every: float = 15.0, stream=None,
                 clock=time.monotonic):
        super().__init__()
        self.batch_size = batch_size
        self.every = every
        self.stream = stream
        self.clock = clock
        self._epoch = 0
        self._start = self._last = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start = self._last = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if now - self._last < self.every:
            return
        self._last = now
        steps = (self.params or {}).get("steps")
        epochs = (self.params or {}).get("epochs")
        print(format_progress(self._epoch + 1, epochs, batch + 1, steps, now - self._start,
                              self.batch_size), file=self.stream or sys.stdout, flush=True)


def format_progress(epoch, epochs, step, steps, seconds, batch_size) -> str:
    """The ProgressLines line for 1-based ``epoch`` and ``step`` (``steps`` None: unknown)."""
    rate = step * batch_size / max(seconds, 1e-9)
    line = f"epoch {epoch}{f'/{epochs}' if epochs else ''}: step {step}"
    if steps:
        remaining = (steps - step) * seconds / step
        eta = f"{remaining / 60:.1f} min" if remaining >= 60 else f"{remaining:.0f} s"
        line += f"/{steps} ({step / steps:.0%}), {rate:.1f} img/s, ETA {eta}"
    else:
        line += f", {rate:.1f} img/s"
    return line


def format_epoch_summary(epoch, epochs, logs, seconds):
    """The EpochSummary line for 1-based `epoch` of `epochs` (None: unknown)."""
    logs = dict(logs)
    learning_rate = logs.pop("learning_rate", None)
    images_per_second = logs.pop("images_per_second", None)
    logs.pop("epoch_seconds", None)  # the wall time is printed last, measured here
    parts = [f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"]
    parts += [f"{name} {_format_value(logs[name])}" for name in sorted(logs, key=_log_order)]
    if learning_rate is not None:
        parts.append(f"lr {learning_rate:.1e}")
    if images_per_second is not None:
        parts.append(f"{images_per_second:.0f} img/s")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)


def _log_order(name):
    # Sorting is stable: metrics keep Keras' order within the train and validation groups.
    validation = name.startswith("val_")
    base = name[4:] if validation else name
    return (validation, base != "loss")


def _format_value(value):
    array = np.asarray(value, dtype=float)
    if array.ndim:  # per-class metrics, e.g. F1Score(average=None)
        return "[" + " ".join(_format_value(item) for item in array.ravel()) + "]"
    number = float(array)
    if number == 0 or 1e-3 <= abs(number) < 1e5 or not math.isfinite(number):
        return f"{number:.3f}"
    return f"{number:.2e}"


class ConfusionMatrixImage(keras.callbacks.Callback):
    """Writes the validation confusion matrix as an image to TensorBoard every `every` epochs.

    Predicts `validation_data` (a tf.data.Dataset of `(features, labels[, weights])` with
    sparse int labels, or a `(features, labels)` tuple of arrays) in one pass, so labels and
    predictions stay paired even if it is shuffled. The model runs on one device outside the
    strategy (no collective ops), so only the chief predicts. Tag "confusion_matrix" at
    step = epoch (1-based, like EpochTensorBoard's scalars) in `log_dir/validation`.
    `self.matrix` holds the latest matrix (rows: true class, columns: predicted class).
    """

    def __init__(self, log_dir, validation_data, class_names, every=1, is_chief=None):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.validation_data = validation_data
        self.class_names = list(class_names)
        self.every = every  # epochs between images; the first epoch always gets one
        self.is_chief = is_chief  # None: ask the model's distribution strategy
        self.matrix = None
        self._writer = None
        self._predict = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every or not _should_write(self):
            return
        labels, predicted = self._predict_validation()
        self.matrix = compute_confusion_matrix(labels, predicted, len(self.class_names))
        image = render_confusion_matrix(self.matrix, self.class_names, f"epoch {epoch + 1}")
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir / "validation"))
        with self._writer.as_default():
            tf.summary.image("confusion_matrix", image[np.newaxis], step=epoch + 1)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _predict_validation(self):
        """(true labels [N], predicted classes [N]) over the validation data."""
        if self._predict is None:
            # reduce_retracing: the last, smaller batch should not trace a second graph.
            model = self.model
            self._predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        labels, predicted = [], []
        for batch in _batches(self.validation_data):
            probabilities = self._predict(batch[0])
            predicted.append(np.argmax(keras.ops.convert_to_numpy(probabilities), axis=-1))
            labels.append(np.reshape(keras.ops.convert_to_numpy(batch[1]), -1))
        return np.concatenate(labels), np.concatenate(predicted)


def _batches(data):
    if isinstance(data, tf.data.Dataset):
        return data
    features, labels = data[0], data[1]  # whole arrays: a single batch
    return [(features, labels)]


def _should_write(callback):
    if callback.is_chief is not None:
        return callback.is_chief
    return is_chief_worker(callback.model.distribute_strategy)


def compute_confusion_matrix(labels, predicted, num_classes):
    """int64 [K, K] counts; entry (t, p) counts samples of true class t predicted as p."""
    labels = np.asarray(labels, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    counts = np.bincount(labels * num_classes + predicted, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def render_confusion_matrix(matrix, class_names, title=""):
    """uint8 RGB [H, W, 3] picture: colours = row-normalised fractions, text = counts."""
    # Figure + the Agg canvas directly: no pyplot, so no global backend or figure state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    figure = Figure(figsize=(6.4, 5.6), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(colours, ax=axes, label="fraction of true class")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set(xlabel="predicted", ylabel="true", title=title)
    for (true, predicted), count in np.ndenumerate(matrix):
        colour = "white" if fractions[true, predicted] > 0.5 else "black"
        axes.text(predicted, true, f"{count:g}", ha="center", va="center", color=colour)
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class AugmentedImages(keras.callbacks.Callback):
    """Writes one grid of training images, as the model sees them, at the start of training.

    Takes the first batch of `dataset` (elements `(features, labels...)`, features a dict
    with "image" or the image tensor itself; uint8, or float in 0-255 which is clipped and
    cast). Tag "augmented_training_images", step 0, in `log_dir/train`; chief only.
    The first batch of a dataset with a full-size shuffle buffer reads the whole dataset:
    pass an unshuffled, augmented copy when that is slow.
    """

    def __init__(self, log_dir, dataset, max_images=8, is_chief=None):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.dataset = dataset
        self.max_images = max_images
        self.is_chief = is_chief  # None: ask the model's distribution strategy

    def on_train_begin(self, logs=None):
        if not _should_write(self):
            return
        features = next(iter(self.dataset))[0]
        images = features["image"] if isinstance(features, dict) else features
        images = np.asarray(images)[: self.max_images]
        if images.dtype != np.uint8:
            images = np.clip(np.round(images), 0, 255).astype(np.uint8)
        writer = tf.summary.create_file_writer(str(self.log_dir / "train"))
        with writer.as_default():
            grid = make_image_grid(images)
            tf.summary.image("augmented_training_images", grid[np.newaxis], step=0)
        writer.close()


def make_image_grid(images, gap=2):
    """uint8 [N, H, W, 3] -> one [rows*(H+gap)-gap, columns*(W+gap)-gap, 3] mosaic.

    Row-major, ceil(sqrt(N)) columns, black `gap`-pixel lines between images.
    """
    count, height, width, channels = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.zeros(
        (rows * (height + gap) - gap, columns * (width + gap) - gap, channels), images.dtype
    )
    for index, image in enumerate(images):
        top = (index // columns) * (height + gap)
        left = (index % columns) * (width + gap)
        grid[top : top + height, left : left + width] = image
    return grid


def log_text(log_dir, tag: str, text: str, is_chief=None) -> None:
    """One text record (step 0) in TensorBoard's Text tab, e.g. what the images were."""
    if not (is_chief_worker() if is_chief is None else is_chief):
        return
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.text(tag, text, step=0)
    writer.close()


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback with epochs numbered as the console numbers them: the
    scalars of epoch 1 at step 1 (Keras writes them at step 0)."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


def log_hparams(log_dir, hparams, *, metrics=HPARAMS_METRICS, group="validation", is_chief=None):
    """Records one trial of a grid for TensorBoard's HParams dashboard, in `log_dir`.

    `log_dir` is the run's TensorBoard folder (the one given to keras.callbacks.TensorBoard);
    `hparams` maps names to values: bool/int/float/str kept (numpy scalars made Python),
    anything else written as str(value). `metrics` are scalar tags of the `group` subfolder
    (keyword-only, so that a stray third positional argument cannot replace them).
    Every run writes the experiment config and TensorBoard uses the first one it finds, so
    give all runs of a grid the same hparam names. Writes only on the chief (`is_chief=None`
    reads TF_CONFIG). Returns the values written, or None on other workers.
    """
    if not (is_chief_worker() if is_chief is None else is_chief):
        return None
    values = {str(name): _hparam_value(value) for name, value in hparams.items()}
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hp.hparams_config(
            hparams=[hp.HParam(name) for name in values],
            metrics=[
                hp.Metric(tag, group=group, display_name=f"{group} {tag.removeprefix('epoch_')}")
                for tag in metrics
            ],
        )
        hp.hparams(values)
    writer.close()
    return values


def _hparam_value(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
