"""BalancedAccuracy and MacroAUC: hand-computed values, sklearn equality, state handling,
serialisation, the JAX backend, and replicas under tf.distribute.MirroredStrategy."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from dermnet.models.metrics import BalancedAccuracy, MacroAUC

ROOT = Path(__file__).resolve().parents[2]
CLASSES = 7
# MacroAUC samples the ROC curve at 1000 thresholds; on a few hundred samples its trapezoid
# sum stays within 2e-3 of the exact (sklearn) AUC.
AUC_TOLERANCE = 2e-3


def one_hot(predicted_classes, num_classes):
    return np.eye(num_classes, dtype="float32")[predicted_classes]


def random_problem(seed, count=400, num_classes=CLASSES):
    """Sparse labels and softmax probabilities that are better than chance."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count)
    logits = rng.normal(size=(count, num_classes))
    logits[np.arange(count), labels] += 1.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities.astype("float32")


def run_python(script, **environment):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT,
        env=os.environ | environment, capture_output=True, text=True, timeout=300,
    )


def test_balanced_accuracy_hand_computed():
    metric = BalancedAccuracy(3)
    metric.update_state(np.array([0, 0, 0, 1, 1, 2]), one_hot([0, 1, 0, 1, 1, 0], 3))
    # recalls: class 0 2/3, class 1 2/2, class 2 0/1
    assert float(metric.result()) == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-6)


def test_balanced_accuracy_leaves_out_classes_absent_from_labels():
    metric = BalancedAccuracy(4)
    # classes 2 and 3 have no true samples; class 3 is predicted once (counts against class 1)
    metric.update_state(np.array([0, 0, 1, 1]), one_hot([0, 0, 1, 3], 4))
    assert float(metric.result()) == pytest.approx((1.0 + 0.5) / 2, abs=1e-6)


def test_balanced_accuracy_is_zero_before_updates_and_after_reset():
    metric = BalancedAccuracy(3)
    assert float(metric.result()) == 0.0
    metric.update_state(np.array([0, 1]), one_hot([0, 1], 3))
    assert float(metric.result()) == 1.0
    metric.reset_state()
    assert float(metric.result()) == 0.0
    metric.update_state(np.array([2, 2]), one_hot([2, 0], 3))
    assert float(metric.result()) == pytest.approx(0.5)


def test_balanced_accuracy_accumulates_batches_and_matches_sklearn():
    labels, probabilities = random_problem(seed=1)
    metric = BalancedAccuracy(CLASSES)
    for start in range(0, len(labels), 64):  # uneven last batch
        batch = slice(start, start + 64)
        # [B, 1] labels, as Keras sometimes hands them over
        metric.update_state(labels[batch, np.newaxis], probabilities[batch])
    expected = balanced_accuracy_score(labels, probabilities.argmax(axis=1))
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    assert 0.3 < expected < 0.9  # the problem is neither trivial nor chance


def test_balanced_accuracy_unchanged_by_per_class_sample_weights():
    labels, probabilities = random_problem(seed=2)
    plain, weighted = BalancedAccuracy(CLASSES), BalancedAccuracy(CLASSES)
    plain.update_state(labels, probabilities)
    class_weights = np.linspace(0.5, 5.0, CLASSES)
    weighted.update_state(labels, probabilities, sample_weight=class_weights[labels])
    assert float(weighted.result()) == pytest.approx(float(plain.result()), abs=1e-6)


def test_macro_auc_matches_sklearn():
    labels, probabilities = random_problem(seed=3)
    metric = MacroAUC(CLASSES)
    assert metric.num_thresholds == 1000
    for start in range(0, len(labels), 100):
        metric.update_state(labels[start : start + 100], probabilities[start : start + 100])
    expected = roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    assert float(metric.result()) == pytest.approx(expected, abs=AUC_TOLERANCE)


def test_macro_auc_leaves_out_classes_without_positives():
    labels, probabilities = random_problem(seed=4)
    present = labels < 5  # classes 5 and 6 never occur as labels
    labels, probabilities = labels[present], probabilities[present]
    metric = MacroAUC(CLASSES)
    metric.update_state(labels, probabilities)
    per_class = [roc_auc_score(labels == k, probabilities[:, k]) for k in range(5)]
    assert float(metric.result()) == pytest.approx(np.mean(per_class), abs=AUC_TOLERANCE)


def test_macro_auc_reset_and_sample_weights():
    labels, probabilities = random_problem(seed=5)
    metric = MacroAUC(CLASSES)
    metric.update_state(labels, probabilities, sample_weight=np.ones(len(labels)))
    unweighted = float(metric.result())
    metric.reset_state()
    assert float(metric.result()) == 0.0
    # weight 2 everywhere counts every sample twice: rates, hence the AUC, are unchanged
    metric.update_state(labels, probabilities, sample_weight=np.full(len(labels), 2.0))
    assert float(metric.result()) == pytest.approx(unweighted, abs=1e-6)


@pytest.mark.parametrize(
    "metric", [BalancedAccuracy(5, name="bacc"), MacroAUC(5, num_thresholds=50, name="auc")]
)
def test_metric_config_round_trip(metric):
    config = metric.get_config()
    rebuilt = type(metric).from_config(config)
    assert rebuilt.get_config() == config
    assert config["num_classes"] == 5 and config["name"] == metric.name
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(restored) is type(metric) and restored.get_config() == config


def test_metrics_survive_model_save_and_load(tmp_path):
    inputs = keras.Input((4,), name="clinical")
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy",
                  metrics=[BalancedAccuracy(3), MacroAUC(3, num_thresholds=100)])
    features = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    labels = np.arange(32) % 3
    before = model.evaluate(features, labels, verbose=0, return_dict=True)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")  # no custom_objects needed
    after = loaded.evaluate(features, labels, verbose=0, return_dict=True)
    for name in ("balanced_accuracy", "macro_auc"):
        assert after[name] == pytest.approx(before[name], abs=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_metrics_run_under_jax_backend():
    result = run_python("""
        import json
        import keras, numpy as np
        from dermnet.models.metrics import BalancedAccuracy, MacroAUC
        assert keras.backend.backend() == "jax"
        balanced, auc = BalancedAccuracy(3), MacroAUC(3)
        predictions = np.eye(3, dtype="float32")[[0, 1, 0, 1, 1, 0]]
        for metric in (balanced, auc):
            metric.update_state(np.array([0, 0, 0, 1, 1, 2]), predictions)
        print(json.dumps([float(balanced.result()), float(auc.result())]))
    """, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    balanced, auc = json.loads(result.stdout.strip().splitlines()[-1])
    assert balanced == pytest.approx(5 / 9, abs=1e-6)
    labels, scores = np.array([0, 0, 0, 1, 1, 2]), np.eye(3)[[0, 1, 0, 1, 1, 0]]
    expected = roc_auc_score(labels, scores, multi_class="ovr", average="macro")
    assert auc == pytest.approx(expected, abs=AUC_TOLERANCE)


# Two logical CPUs must be configured before TensorFlow touches its devices: own process.
MIRRORED_SCRIPT = """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from dermnet.models.metrics import BalancedAccuracy, MacroAUC

    rng = np.random.default_rng(0)
    features = rng.normal(size=(101, 8)).astype("float32")  # 101: uneven replica split
    labels = rng.integers(0, 7, 101).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices(({"clinical": features}, labels)).batch(16)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((8,), name="clinical")
        outputs = keras.layers.Dense(7, activation="softmax", name="probabilities")(inputs)
        model = keras.Model({"clinical": inputs}, outputs)
        balanced = BalancedAccuracy(7)
        model.compile("sgd", "sparse_categorical_crossentropy",
                      metrics=[balanced, MacroAUC(7)])
    replicated = model.evaluate(dataset, verbose=0, return_dict=True)
    # A ratio hides a mean over replicas; the summed counts do not.
    counted = float(keras.ops.convert_to_numpy(balanced.confusion).sum())
    probabilities = model({"clinical": features}).numpy()
    single = {}
    for metric in (BalancedAccuracy(7), MacroAUC(7)):
        metric.update_state(labels, probabilities)
        single[metric.name] = float(metric.result())
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "counted": counted,
                      "replicated": replicated, "single": single}))
"""


@pytest.mark.slow
def test_metrics_under_mirrored_strategy_equal_single_device():
    result = run_python(MIRRORED_SCRIPT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["counted"] == 101
    for name in ("balanced_accuracy", "macro_auc"):
        assert report["replicated"][name] == pytest.approx(report["single"][name], abs=1e-5)
