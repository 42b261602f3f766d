"""Multi-task VGG16 variants: frozen layers, STN placement, pinned parameter counts, the
masked loss against a hand computation, per-task metrics, save/reload, JAX."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from dermnet.models.losses import MaskedBinaryCrossentropy
from dermnet.models.metrics import MaskedAUC, MaskedBinaryAccuracy, make_task_metrics
from dermnet.models.multitask import TASKS, VARIANTS, build_multitask_vgg16
from dermnet.models.spatial_transformer import SpatialTransformer

RNG = np.random.default_rng(0)
SMALL = (64, 64)
TINY_STN = (32, 32)  # localization view for tests: survives two 5x5 pools, builds fast
VGG16_HEADLESS = 14_714_688  # keras.applications.VGG16(include_top=False).count_params()
BLOCK5 = 3 * (3 * 3 * 512 * 512 + 512)  # the three convs the original left trainable
# Rows: psoriasis, eczema (in two tasks), acne, rosacea, CTCL; -1 = not in this task.
LABELS = np.array([[0, -1, -1], [1, -1, 1], [-1, 0, -1], [-1, 1, -1], [-1, -1, 0]], "float32")

# One table drives the variant tests: variant -> (STN present, trainable VGG16 conv layers).
EXPECTED = {"p": (False, 3), "n": (False, 13), "ps": (True, 3), "ns": (True, 13)}


def build(variant, **kwargs):
    return build_multitask_vgg16(variant, SMALL, weights=None, localization_size=TINY_STN,
                                 **kwargs)


def trunk_of(model):
    return model.get_layer("vgg16")


def test_every_variant_is_in_the_test_table():
    assert list(VARIANTS) == list(EXPECTED)


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_variant_structure_frozen_layers_and_output(variant):
    has_stn, trainable_convs = EXPECTED[variant]
    model = build(variant)
    trunk = trunk_of(model)
    convs = [layer for layer in trunk.layers if layer.weights]
    assert [layer.name for layer in convs if layer.trainable] == \
        [layer.name for layer in convs[13 - trainable_convs:]]
    assert any(isinstance(layer, SpatialTransformer) for layer in model.layers) == has_stn
    assert trunk.count_params() == VGG16_HEADLESS
    trainable = sum(int(np.prod(w.shape)) for w in trunk.trainable_weights)
    assert trainable == (BLOCK5 if trainable_convs == 3 else VGG16_HEADLESS)
    images = RNG.integers(0, 256, (2, *SMALL, 3)).astype("uint8")
    probabilities = model.predict({"image": images}, verbose=0)
    assert probabilities.shape == (2, 3) and np.all((probabilities > 0) & (probabilities < 1))


def test_outputs_and_branches_are_named_after_tasks():
    model = build("p")
    assert [tensor.name for tensor in model.inputs] == ["image"]
    assert model.output_names == ["tasks"]
    for task in TASKS:
        assert model.get_layer(task).units == 1
        assert model.get_layer(f"{task}_dense").units == 32
    assert model.get_layer("head_dense").units == 64


def test_frozen_layers_is_configurable_and_checked():
    model = build("p", frozen_layers=19)  # the paper's reading: every conv layer frozen
    assert not trunk_of(model).trainable_weights
    assert model.trainable_weights  # the head still trains
    with pytest.raises(ValueError, match=r"frozen_layers must be in \[0, 19\]"):
        build("p", frozen_layers=20)


@pytest.mark.parametrize("variant, weights, message", [
    ("vgg", None, "unknown variant 'vgg'; valid: p, n, ps, ns"),
    ("n", "imagenet", "variant 'n' trains from scratch"),
])
def test_bad_arguments_are_named(variant, weights, message):
    with pytest.raises(ValueError, match=message):
        build_multitask_vgg16(variant, SMALL, weights=weights)


def bce(label, probability):
    return -(label * np.log(probability) + (1 - label) * np.log(1 - probability))


def test_masked_loss_matches_a_hand_computation():
    labels = LABELS[1:3]  # an eczema row (two tasks) and an acne row (one task)
    probabilities = np.array([[0.8, 0.3, 0.6], [0.1, 0.2, 0.9]], "float32")
    # Valid entries: eczema in task 0 (label 1, p 0.8) and task 2 (label 1, p 0.6); acne in
    # task 1 (label 0, p 0.2). Mean over those three, not over all six.
    expected = (bce(1, 0.8) + bce(1, 0.6) + bce(0, 0.2)) / 3
    loss = MaskedBinaryCrossentropy()(labels, probabilities)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    logits = np.log(probabilities / (1 - probabilities))
    from_logits = MaskedBinaryCrossentropy(from_logits=True)(labels, logits)
    np.testing.assert_allclose(float(from_logits), expected, rtol=1e-5)
    # A per-image weight scales that image's terms; the divisor stays the 3 valid entries.
    weighted = MaskedBinaryCrossentropy()(labels, probabilities, sample_weight=[2.0, 1.0])
    np.testing.assert_allclose(float(weighted),
                               (2 * bce(1, 0.8) + 2 * bce(1, 0.6) + bce(0, 0.2)) / 3, rtol=1e-5)


def test_masked_entries_contribute_nothing():
    predictions = tf.Variable(RNG.normal(size=LABELS.shape).astype("float32"))
    with tf.GradientTape() as tape:
        loss = MaskedBinaryCrossentropy(from_logits=True)(LABELS, predictions)
    gradient = tape.gradient(loss, predictions).numpy()
    assert np.all(gradient[LABELS < 0] == 0)
    assert np.all(gradient[LABELS >= 0] != 0)
    changed = predictions.numpy().copy()
    changed[LABELS < 0] = 50.0  # wildly wrong, but in no task
    np.testing.assert_allclose(
        float(MaskedBinaryCrossentropy(from_logits=True)(LABELS, changed)), float(loss))
    assert float(MaskedBinaryCrossentropy()(-np.ones((2, 3)), np.full((2, 3), 0.5))) == 0.0


def test_masked_loss_serialises():
    loss = MaskedBinaryCrossentropy(from_logits=True, name="tasks_loss")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, MaskedBinaryCrossentropy)
    assert (restored.from_logits, restored.name) == (True, "tasks_loss")


def test_task_metrics_see_only_their_task():
    probabilities = np.array([[0.2, 0.9, 0.9], [0.7, 0.9, 0.4], [0.9, 0.1, 0.9],
                              [0.9, 0.8, 0.9], [0.9, 0.9, 0.3]], "float32")
    accuracy = MaskedBinaryAccuracy(task_index=2)  # CTCL vs eczema: rows eczema and CTCL
    accuracy.update_state(LABELS, probabilities)
    assert float(accuracy.result()) == pytest.approx(0.5)  # eczema 0.4 wrong, CTCL 0.3 right
    auc = MaskedAUC(task_index=1)  # acne (0.1) below rosacea (0.8): perfect ranking
    auc.update_state(LABELS, probabilities)
    assert float(auc.result()) == pytest.approx(1.0)
    names = [metric.name for metric in make_task_metrics(TASKS)]
    assert names[:2] == ["psoriasis_vs_eczema_auc", "psoriasis_vs_eczema_accuracy"]
    assert MaskedAUC.from_config(auc.get_config()).task_index == 1


@pytest.mark.slow
def test_one_training_step_with_the_masked_loss():
    model = build("ns")
    model.compile(keras.optimizers.Adam(1e-4), MaskedBinaryCrossentropy(),
                  metrics=make_task_metrics(TASKS), jit_compile=False)  # no slow XLA compile
    images = RNG.integers(0, 256, (5, *SMALL, 3)).astype("float32")
    history = model.fit({"image": images}, LABELS, batch_size=5, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert "ctcl_vs_eczema_auc" in history.history


@pytest.mark.slow
def test_save_reload_ns_gives_identical_outputs(tmp_path):
    model = build("ns", transformer_output_size=(48, 48))
    stn = model.get_layer("spatial_transformer")
    stn.head.kernel.assign(RNG.normal(0, 0.05, stn.head.kernel.shape).astype("float32"))
    images = RNG.integers(0, 256, (2, *SMALL, 3)).astype("float32")
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict({"image": images}, verbose=0),
                                  model.predict({"image": images}, verbose=0))
    assert reloaded.get_layer("spatial_transformer").output_size == (48, 48)


def test_frozen_layers_survive_save_reload(tmp_path):
    model = build("p")
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert len(reloaded.trainable_weights) == len(model.trainable_weights)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_every_variant_builds_under_jax_without_tensorflow():
    script = textwrap.dedent("""
        import sys
        import keras, numpy as np
        from dermnet.models.multitask import VARIANTS, build_multitask_vgg16
        assert keras.backend.backend() == "jax"
        images = np.zeros((1, 64, 64, 3), "float32")
        for variant in VARIANTS:
            model = build_multitask_vgg16(variant, (64, 64), weights=None,
                                          localization_size=(32, 32))
            assert model.predict({"image": images}, verbose=0).shape == (1, 3), variant
            print("built", variant)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
    """)
    environment = os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("built") == 4
