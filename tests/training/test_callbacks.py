"""Training callbacks: what a real fit writes to TensorBoard, history.csv and the console,
read back with TensorBoard's own event reader; chief-only writing; MirroredStrategy."""

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from dermnet.data.vocabulary import CLASSES
from dermnet.models.metrics import BalancedAccuracy, MacroAUC
from dermnet.training.callbacks import (
    AugmentedImages,
    ConfusionMatrixImage,
    EpochSummary,
    EpochTensorBoard,
    ProgressLines,
    Throughput,
    compute_confusion_matrix,
    compute_learning_rate,
    format_epoch_summary,
    is_chief_worker,
    log_hparams,
    make_image_grid,
    render_confusion_matrix,
)

ROOT = Path(__file__).resolve().parents[2]
BATCH = 8
EPOCHS = 2
TRAIN_IMAGES, VALIDATION_IMAGES = 48, 21
LEARNING_RATE = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=1, decay_rate=0.9)
HPARAMS = {"backbone": "resnet50", "resolution": (224, 300), "clinical": True, "fold": 3,
           "learning_rate": np.float32(1e-2)}


def make_dataset(count, seed, shuffle=False):
    """Batches like the real pipeline's: ({"image": uint8, "clinical": float32}, int32)."""
    rng = np.random.default_rng(seed)
    features = {"image": rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8),
                "clinical": rng.normal(size=(count, 4)).astype("float32")}
    labels = rng.integers(0, len(CLASSES), count).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed)
    return dataset.batch(BATCH), features, labels


def build_model():
    image = keras.Input((8, 8, 3), dtype="uint8", name="image")
    clinical = keras.Input((4,), name="clinical")
    pixels = keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(image))
    joined = keras.layers.Concatenate()([pixels, clinical])
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(joined)
    model = keras.Model({"image": image, "clinical": clinical}, outputs)
    model.compile(keras.optimizers.SGD(LEARNING_RATE), "sparse_categorical_crossentropy",
                  metrics=["accuracy", BalancedAccuracy(len(CLASSES)), MacroAUC(len(CLASSES))])
    return model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 2-epoch fit with every callback, in train.py's order."""
    run_dir = tmp_path_factory.mktemp("run")
    log_dir = run_dir / "tb"
    train, _, _ = make_dataset(TRAIN_IMAGES, seed=0)
    validation, features, labels = make_dataset(VALIDATION_IMAGES, seed=1)
    model = build_model()
    console = io.StringIO()
    confusion = ConfusionMatrixImage(log_dir, validation, CLASSES)
    callbacks = [
        Throughput(BATCH),
        EpochSummary(stream=console),
        EpochTensorBoard(log_dir),
        keras.callbacks.CSVLogger(run_dir / "history.csv"),
        confusion,
        AugmentedImages(log_dir, train, max_images=5),
    ]
    log_hparams(log_dir, HPARAMS)
    history = model.fit(train, validation_data=validation, epochs=EPOCHS, callbacks=callbacks,
                        verbose=0)
    expected_matrix = compute_confusion_matrix(
        labels, model.predict(features, verbose=0).argmax(axis=1), len(CLASSES))
    return {"log_dir": log_dir, "run_dir": run_dir, "history": history.history,
            "console": console.getvalue(), "matrix": confusion.matrix,
            "expected_matrix": expected_matrix}


def load_events(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def scalar_values(accumulator, tag):
    return [(event.step, float(tf.make_ndarray(event.tensor_proto)))
            for event in accumulator.Tensors(tag)]


def image_values(accumulator, tag):
    """(step, uint8 [H, W, C]) per event: TF2 writes images as tensors [width, height, png...]."""
    return [(event.step, tf.io.decode_png(event.tensor_proto.string_val[2]).numpy())
            for event in accumulator.Tensors(tag)]


@pytest.mark.slow
def test_fit_writes_epoch_scalars_for_train_and_validation(run):
    expected = {"epoch_loss", "epoch_accuracy", "epoch_balanced_accuracy", "epoch_macro_auc"}
    train = load_events(run["log_dir"] / "train").Tags()["tensors"]
    validation = load_events(run["log_dir"] / "validation").Tags()["tensors"]
    assert expected | {"epoch_learning_rate", "epoch_images_per_second"} <= set(train)
    assert expected <= set(validation)
    assert "epoch_images_per_second" not in validation


def test_learning_rate_is_written_once_per_epoch_at_the_schedule_value(run):
    values = scalar_values(load_events(run["log_dir"] / "train"), "epoch_learning_rate")
    steps_per_epoch = TRAIN_IMAGES // BATCH
    expected = [(epoch, float(LEARNING_RATE((epoch + 1) * steps_per_epoch)))
                for epoch in range(EPOCHS)]
    # Epochs numbered from 1, as the console numbers them; no duplicate tag from two writers.
    assert [step for step, _ in values] == [1, 2]
    assert [value for _, value in values] == pytest.approx([value for _, value in expected])
    assert run["history"]["learning_rate"] == pytest.approx([value for _, value in expected])


def test_throughput_and_learning_rate_reach_history_csv(run):
    history = pd.read_csv(run["run_dir"] / "history.csv")
    assert len(history) == EPOCHS
    assert {"images_per_second", "learning_rate", "val_balanced_accuracy",
            "val_macro_auc"} <= set(history.columns)
    assert (history["images_per_second"] > 0).all()


def test_confusion_matrix_image_per_epoch_in_validation(run):
    images = image_values(load_events(run["log_dir"] / "validation"), "confusion_matrix")
    assert [step for step, _ in images] == [1, 2]
    picture = images[-1][1]
    assert picture.ndim == 3 and picture.shape[0] > 200 and picture.shape[1] > 200
    # The matrix pictured is the model's: every validation image counted once, as predicted.
    np.testing.assert_array_equal(run["matrix"], run["expected_matrix"])
    assert run["matrix"].sum() == VALIDATION_IMAGES


def test_augmented_images_grid_written_once_in_train(run):
    images = image_values(load_events(run["log_dir"] / "train"), "augmented_training_images")
    assert [step for step, _ in images] == [0]
    grid = images[0][1]
    assert grid.shape[:2] == (2 * 8 + 2, 3 * 8 + 2 * 2)  # 5 images in 3 columns, 2 rows


def test_hparams_record_names_values_and_validation_metrics(run):
    accumulator = load_events(run["log_dir"])
    content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    experiment = hparams_metadata.parse_experiment_plugin_data(
        content[hparams_metadata.EXPERIMENT_TAG])
    session = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG])
    assert [info.name for info in experiment.hparam_infos] == list(HPARAMS)  # in order
    metrics = {(info.name.group, info.name.tag) for info in experiment.metric_infos}
    assert {("validation", "epoch_balanced_accuracy"), ("validation", "epoch_macro_auc"),
            ("validation", "epoch_accuracy"), ("validation", "epoch_loss")} <= metrics
    values = session.hparams
    assert values["backbone"].string_value == "resnet50"
    assert values["resolution"].string_value == "(224, 300)"
    assert values["clinical"].bool_value is True
    assert values["fold"].number_value == 3
    assert values["learning_rate"].number_value == pytest.approx(1e-2)


def test_epoch_summary_prints_one_line_per_epoch(run):
    lines = run["console"].splitlines()
    assert len(lines) == EPOCHS
    number = r"\d+\.\d{3}"
    pattern = (rf"epoch (\d)/2  loss {number}  accuracy {number}  balanced_accuracy {number}"
               rf"  macro_auc {number}  val_loss {number}  val_accuracy {number}"
               rf"  val_balanced_accuracy {number}  val_macro_auc {number}"
               rf"  lr \d\.\de-0\d  \d+ img/s  \d+\.\d s")
    for epoch, line in enumerate(lines, start=1):
        match = re.fullmatch(pattern, line)
        assert match, line
        assert match.group(1) == str(epoch)


def test_format_epoch_summary_orders_and_formats():
    logs = {"val_accuracy": 0.5, "accuracy": 0.70149, "val_loss": 0.934, "loss": 0.8123,
            "learning_rate": 1e-4, "images_per_second": 311.6, "tiny": 2e-5}
    line = format_epoch_summary(3, 90, logs, seconds=41.24)
    assert line == ("epoch 3/90  loss 0.812  accuracy 0.701  tiny 2.00e-05  val_loss 0.934"
                    "  val_accuracy 0.500  lr 1.0e-04  312 img/s  41.2 s")
    assert format_epoch_summary(1, None, {}, 0.0) == "epoch 1  0.0 s"


def test_compute_learning_rate_evaluates_schedules_and_unwraps_loss_scaling():
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    optimizer.iterations.assign(3)
    assert compute_learning_rate(optimizer) == pytest.approx(1e-2 * 0.9**3)
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(2.5e-4))
    assert compute_learning_rate(scaled) == pytest.approx(2.5e-4)


def test_log_hparams_metrics_are_keyword_only(tmp_path):
    with pytest.raises(TypeError):
        log_hparams(tmp_path, HPARAMS, ["mel", "nv"])  # e.g. class names by mistake
    assert log_hparams(tmp_path, {"size": np.int64(7), "none": None}, is_chief=True) == {
        "size": 7, "none": "None"}


def test_compute_and_render_confusion_matrix():
    matrix = compute_confusion_matrix([0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 1, 0], 3)
    np.testing.assert_array_equal(matrix, [[2, 1, 0], [0, 2, 0], [1, 0, 0]])
    picture = render_confusion_matrix(matrix, ["mel", "nv", "bcc"])
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 10  # text and colours drawn


def test_make_image_grid_places_images_row_major():
    images = np.stack([np.full((2, 3, 3), value, np.uint8) for value in (10, 20, 30)])
    grid = make_image_grid(images, gap=1)
    assert grid.shape == (2 * 2 + 1, 2 * 3 + 1, 3)
    assert grid[0, 0, 0] == 10 and grid[0, 4, 0] == 20 and grid[3, 0, 0] == 30
    assert grid[2, 0, 0] == 0 and grid[3, 4, 0] == 0  # gap line, empty fourth cell


@pytest.mark.parametrize(("tf_config", "expected"), [
    (None, True),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}},
     True),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}},
     False),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 0}}, False),
])
def test_is_chief_worker_reads_tf_config(monkeypatch, tf_config, expected):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert is_chief_worker() is expected
    assert is_chief_worker(tf.distribute.get_strategy()) is True  # default strategy


def test_non_chief_writes_nothing(tmp_path, monkeypatch):
    dataset, _, _ = make_dataset(16, seed=2)
    model = build_model()
    for callback in (ConfusionMatrixImage(tmp_path, dataset, CLASSES, is_chief=False),
                     AugmentedImages(tmp_path, dataset, is_chief=False)):
        callback.set_model(model)
        callback.on_train_begin()
        callback.on_epoch_end(0)
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}))
    assert log_hparams(tmp_path, HPARAMS) is None
    assert list(tmp_path.iterdir()) == []


def test_confusion_matrix_every_n_epochs_and_shuffled_data(tmp_path):
    dataset, features, labels = make_dataset(30, seed=3, shuffle=True)
    model = build_model()
    callback = ConfusionMatrixImage(tmp_path, dataset, CLASSES, every=2)
    callback.set_model(model)
    for epoch in range(3):
        callback.on_epoch_end(epoch)
    callback.on_train_end()
    images = image_values(load_events(tmp_path / "validation"), "confusion_matrix")
    assert [step for step, _ in images] == [1, 3]  # epochs 1 and 3, as the console says
    expected = compute_confusion_matrix(
        labels, model.predict(features, verbose=0).argmax(axis=1), len(CLASSES))
    np.testing.assert_array_equal(callback.matrix, expected)  # pairs kept despite shuffling


# Two logical CPUs must be configured before TensorFlow touches its devices: own process.
MIRRORED_SCRIPT = """
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    import sys
    sys.path.insert(0, "tests/training")
    from test_callbacks import BATCH, CLASSES, build_model, make_dataset
    from dermnet.training.callbacks import (
        ConfusionMatrixImage, Throughput, compute_confusion_matrix)

    train, _, _ = make_dataset(32, seed=0)
    validation, features, labels = make_dataset(21, seed=1)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build_model()
    confusion = ConfusionMatrixImage(sys.argv[1], validation, CLASSES)
    history = model.fit(train, validation_data=validation, epochs=1, verbose=0,
                        callbacks=[Throughput(BATCH), confusion])
    expected = compute_confusion_matrix(
        labels, model.predict(features, verbose=0).argmax(axis=1), len(CLASSES))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "matrix": confusion.matrix.tolist(), "expected": expected.tolist(),
                      "images_per_second": history.history["images_per_second"]}))
"""


@pytest.mark.slow
def test_callbacks_under_mirrored_strategy(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MIRRORED_SCRIPT), str(tmp_path)], cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["matrix"] == report["expected"]
    assert report["images_per_second"][0] > 0
    assert len(image_values(load_events(tmp_path / "validation"), "confusion_matrix")) == 1


def test_a_runs_hparams_start_with_what_tells_runs_apart():
    from dermnet.config import make_config
    from dermnet.training.run import _hparams

    names = list(_hparams(make_config("default")))
    assert names[:4] == ["model.backbone", "data.image_size", "data.clinical", "data.fold"]
    assert names[-4:] == ["data.data_dir", "data.cache", "data.sources_csv", "data.crop_dir"]
    assert len(names) == len(set(names))


def test_progress_lines_come_every_15_seconds_with_an_eta():
    now = [0.0]
    stream = io.StringIO()
    callback = ProgressLines(batch_size=32, every=15, stream=stream, clock=lambda: now[0])
    callback.set_params({"epochs": 8, "steps": 100})
    callback.on_epoch_begin(0)
    for step in range(100):  # 1 s per step
        now[0] += 1.0
        callback.on_train_batch_end(step)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6  # at 15, 30, ..., 90 s
    # 15 steps of 32 images in 15 s; 85 steps left at 1 s each.
    assert lines[0] == "epoch 1/8: step 15/100 (15%), 32.0 img/s, ETA 1.4 min"
    assert lines[-1] == "epoch 1/8: step 90/100 (90%), 32.0 img/s, ETA 10 s"
