"""The InfoGAN training model: one step at 4x4 and in an 8x8 fade gives finite metrics and
moves both networks; the weight average after one step is exactly 0.999 old + 0.001 new;
the growth callback follows the schedule; the real images' cross-fade, the in-graph codes
and the class grid's codes have known values; clinical codes are real rows of the drawn class,
seeded, and train the Q head's clinical outputs; two MirroredStrategy replicas on logical
CPUs take the same step as one replica with the same global batch."""

import dataclasses
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan.clinical import CLINICAL_CODES, make_clinical_table
from gan.config import NetworkConfig, make_gan_config
from gan.model import (
    METRICS,
    GanNetworks,
    GrowthTracker,
    compute_faded_reals,
    draw_clinical_codes,
    draw_codes,
    make_grid_codes,
    update_average,
)
from gan.schedule import compute_learning_rate, smoke_schedule
from gan.train import compile_stage_model

ROOT = Path(__file__).resolve().parents[2]
to_numpy = keras.ops.convert_to_numpy
TINY = NetworkConfig(final_resolution=8, latent_size=8, continuous_codes=2, fmap_base=32,
                     fmap_max=8, q_units=8)


def make_model(resolution, fade, network=TINY, seed=0, optimizer=None):
    """A tiny stage model, compiled with the run's Adam or with ``optimizer()``."""
    keras.utils.set_random_seed(seed)
    networks = GanNetworks(network)
    model = networks.build_stage(resolution, fade, seed=seed)
    compile_stage_model(model, dataclasses.replace(make_gan_config("smoke"), network=network))
    if optimizer is not None:
        model.compile(optimizer(), optimizer())
    return networks, model


def snapshot(variables):
    return [to_numpy(variable) for variable in variables]


def real_batch(resolution, batch=4, seed=0):
    pixels = np.random.default_rng(seed).uniform(-1, 1, (batch, resolution, resolution, 3))
    return tf.constant(pixels, tf.float32)


@pytest.fixture(scope="module", params=[(4, False), (8, True)], ids=["4x4", "8x8-fade"])
def one_step(request):
    """A tiny stage model's weights before one train step, the model and its metrics after."""
    _, model = make_model(*request.param)
    model.fade_in.assign(0.5)
    before = {name: snapshot(getattr(model, name).weights)
              for name in ("generator", "discriminator", "average_generator")}
    metrics = tf.function(model.train_step)(real_batch(request.param[0]))
    return before, model, metrics


@pytest.mark.slow
def test_one_step_returns_finite_metrics_and_moves_both_networks(one_step):
    before, model, metrics = one_step
    assert set(metrics) == set(METRICS)
    assert all(np.isfinite(float(value)) for value in metrics.values())
    assert float(metrics["gradient_penalty"]) >= 0 and float(metrics["drift"]) >= 0
    for name in ("generator", "discriminator"):
        after = getattr(model, name).weights
        moved = [not np.array_equal(old, to_numpy(new)) for old, new in zip(before[name], after)]
        assert sum(moved) >= len(moved) // 2, name


@pytest.mark.slow
def test_weight_average_after_one_step_is_the_exact_blend(one_step):
    before, model, _ = one_step
    # The average started as a copy of the generator ...
    for old, average in zip(before["generator"], before["average_generator"]):
        np.testing.assert_array_equal(old, average)
    # ... and one step later it is 0.999 of it plus 0.001 of the new generator.
    for old, new, average in zip(before["generator"], model.generator.weights,
                                 model.average_generator.weights):
        np.testing.assert_allclose(to_numpy(average), 0.999 * old + 0.001 * to_numpy(new),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_real_labels_train_the_q_heads_class_outputs():
    """With (images, one-hot labels) batches, Q's class loss on the real images is tracked
    and falls as the critic steps; without labels it is exactly 0."""
    _, model = make_model(4, False)
    model.compile(keras.optimizers.Adam(0.005), keras.optimizers.Adam(0.005),
                  info_weight=0.0, label_weight=1.0)
    images = real_batch(4, batch=8)
    labels = tf.one_hot([0, 1, 2, 3, 4, 5, 6, 0], 7)
    step = tf.function(model.train_step)
    losses = []
    for _ in range(60):
        for tracker in model.metrics:
            tracker.reset_state()
        losses.append(float(step((images, labels))["real_class_loss"]))
    assert losses[0] == pytest.approx(-np.log(1 / 7), abs=0.7)  # about uniform at the start
    assert losses[-1] < 0.75 * losses[0]  # 2.16 -> 1.43 when written
    for tracker in model.metrics:
        tracker.reset_state()
    assert float(tf.function(model.train_step)(images)["real_class_loss"]) == 0.0


def test_continuous_term_is_weighted_apart_from_the_others():
    _, model = make_model(4, False)
    model.compile(model.generator_optimizer, model.discriminator_optimizer,
                  continuous_weight=0.1)
    terms = {"info_categorical": 1.5, "info_continuous": 2.0, "info_clinical": 3.0}
    assert model._weighted(terms) == pytest.approx(1.5 + 0.1 * 2.0 + 3.0)


def test_update_average_known_values():
    averages = [keras.Variable(np.array([1.0, 2.0], "float32"))]
    weights = [keras.Variable(np.array([11.0, -8.0], "float32"))]
    update_average(averages, weights, 0.9)
    np.testing.assert_allclose(to_numpy(averages[0]), [2.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(weights[0]), [11.0, -8.0])


def test_growth_tracker_follows_the_schedule():
    schedule = smoke_schedule(8)  # 16 images per phase: 4 stable, 8 fade (16-32), 8 stable
    model = types.SimpleNamespace(
        fade=True, fade_in=keras.Variable(0.0), images_seen=keras.Variable(0, dtype="int64"),
        generator_optimizer=keras.optimizers.Adam(1.0),
        discriminator_optimizer=keras.optimizers.Adam(1.0))
    tracker = GrowthTracker(schedule, images_seen=20, batch_size=4)
    tracker.set_model(model)
    for expected_seen, expected_fade in ((20, 0.25), (24, 0.5), (28, 0.75)):
        tracker.on_train_batch_begin(0)
        assert int(model.images_seen.numpy()) == expected_seen
        assert float(model.fade_in.numpy()) == pytest.approx(expected_fade)
        for optimizer in (model.generator_optimizer, model.discriminator_optimizer):
            assert float(optimizer.learning_rate) == pytest.approx(
                compute_learning_rate(schedule, expected_seen), rel=1e-6)
        tracker.on_train_batch_end(0)
    assert tracker.images_seen == 32
    model.fade = False  # a stable stage's model always gets alpha = 1
    tracker.on_train_batch_begin(0)
    assert float(model.fade_in.numpy()) == 1.0


def test_faded_reals_blend_with_the_box_averaged_copy():
    images = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    coarse = np.array([[2.5, 4.5], [10.5, 12.5]], "float32").repeat(2, 0).repeat(2, 1)
    np.testing.assert_allclose(compute_faded_reals(images, 0.0)[0, ..., 0], coarse)
    np.testing.assert_allclose(compute_faded_reals(images, 1.0), images)
    np.testing.assert_allclose(compute_faded_reals(images, 0.25)[0, ..., 0],
                               coarse + 0.25 * (images[0, ..., 0] - coarse))


def test_draw_codes_are_seeded_and_well_formed():
    seed = tf.constant([3, 7], tf.int64)
    codes = draw_codes(seed, 500, TINY)
    again = draw_codes(seed, 500, TINY)
    other = draw_codes(tf.constant([3, 8], tf.int64), 500, TINY)
    assert {name: tuple(value.shape) for name, value in codes.items()} == {
        "noise": (500, 8), "categorical": (500, 7), "continuous": (500, 2)}
    for name in codes:
        np.testing.assert_array_equal(codes[name], again[name])
    assert not np.array_equal(codes["noise"], other["noise"])
    categorical = np.array(codes["categorical"])
    np.testing.assert_array_equal(categorical.sum(axis=1), 1.0)
    assert set(categorical.argmax(axis=1)) == set(range(7))
    continuous = np.array(codes["continuous"])
    assert continuous.min() >= -1.0 and continuous.max() <= 1.0 and continuous.std() > 0.4


def test_grid_codes_have_one_class_per_row_and_shared_columns():
    codes = make_grid_codes(TINY, columns=3, seed=1)
    assert codes["noise"].shape == (21, 8)
    np.testing.assert_array_equal(codes["categorical"].argmax(axis=1), np.repeat(range(7), 3))
    rows = codes["noise"].reshape(7, 3, 8)
    assert all(np.array_equal(rows[0], row) for row in rows)
    assert not np.array_equal(rows[0, 0], rows[0, 1])


# --- clinical codes ---------------------------------------------------------------------------

CLINICAL = dataclasses.replace(TINY, clinical_codes=CLINICAL_CODES)
ROWS_PER_CLASS = (3, 1, 2, 1, 1, 1, 4)


def clinical_rows():
    """Shuffled rows whose first entry is the row's own index (to recognise it), with their
    labels, and the table made of them."""
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(7), ROWS_PER_CLASS))
    encoded = np.random.default_rng(1).normal(size=(len(labels), CLINICAL_CODES))
    encoded[:, 0] = np.arange(len(labels))
    return encoded.astype("float32"), labels, make_clinical_table(encoded, labels, 7)


def test_clinical_table_groups_rows_by_class():
    encoded, labels, table = clinical_rows()
    np.testing.assert_array_equal(table.counts, ROWS_PER_CLASS)
    np.testing.assert_array_equal(table.offsets, np.cumsum(ROWS_PER_CLASS) - ROWS_PER_CLASS)
    for label in range(7):
        start, count = table.offsets[label], table.counts[label]
        np.testing.assert_array_equal(table.rows[start:start + count],
                                      encoded[labels == label])


def test_a_class_without_rows_is_an_error_naming_it():
    labels = np.array([0, 1, 2, 3, 4, 6, 6])
    with pytest.raises(ValueError, match=r"no training rows of class\(es\) 5 \(df\)"):
        make_clinical_table(np.zeros((7, 3)), labels, 7)


def test_clinical_codes_are_real_rows_of_the_requested_class_and_seeded():
    encoded, labels, table = clinical_rows()
    classes = tf.constant(np.repeat(np.arange(7), 100), tf.int32)
    seed = tf.constant([5, 11], tf.int64)
    drawn = draw_clinical_codes(seed, classes, table).numpy()  # [700, 20]
    indices = drawn[:, 0].astype(int)
    np.testing.assert_array_equal(drawn, encoded[indices])  # whole real rows
    np.testing.assert_array_equal(labels[indices], classes.numpy())  # of the drawn class
    for label in range(7):  # every row of a class is drawn (P(miss) < 4 * 0.75**100)
        assert set(indices[classes.numpy() == label]) == set(np.flatnonzero(labels == label))
    np.testing.assert_array_equal(draw_clinical_codes(seed, classes, table), drawn)
    other = draw_clinical_codes(tf.constant([5, 12], tf.int64), classes, table).numpy()
    assert not np.array_equal(other, drawn)


def test_draw_codes_with_a_table_add_clinical_rows_of_each_sample_class():
    encoded, labels, table = clinical_rows()
    seed = tf.constant([3, 7], tf.int64)
    codes = draw_codes(seed, 200, CLINICAL, table)
    plain = draw_codes(seed, 200, TINY)  # the other draws do not change
    for name in plain:
        np.testing.assert_array_equal(codes[name], plain[name])
    indices = codes["clinical"].numpy()[:, 0].astype(int)
    np.testing.assert_array_equal(labels[indices], np.argmax(codes["categorical"], axis=1))


def test_training_with_clinical_codes_needs_a_matching_table():
    networks = GanNetworks(CLINICAL)  # networks alone are fine: loading, sampling
    with pytest.raises(ValueError, match="needs a clinical table"):
        networks.build_stage(4, False)
    narrow = make_clinical_table(np.zeros((7, 3)), np.arange(7), 7)
    with pytest.raises(ValueError, match="has 3 entries per row"):
        GanNetworks(CLINICAL, narrow).build_stage(4, False)
    with pytest.raises(ValueError, match="network expects network.clinical_codes=0"):
        GanNetworks(TINY, narrow).build_stage(4, False)


@pytest.mark.slow
def test_one_step_with_clinical_codes_trains_the_q_heads_clinical_outputs():
    keras.utils.set_random_seed(0)
    networks = GanNetworks(CLINICAL, clinical_rows()[2])
    model = networks.build_stage(4, False)
    compile_stage_model(model, dataclasses.replace(make_gan_config("smoke"), network=CLINICAL))
    head = networks.discriminator.heads["clinical_logits"]
    before = snapshot(head.weights)
    metrics = tf.function(model.train_step)(real_batch(4))
    assert set(metrics) == set(METRICS) | {"info_clinical"}
    assert all(np.isfinite(float(value)) for value in metrics.values())
    assert float(metrics["info_clinical"]) > 0
    assert all(not np.array_equal(old, new) for old, new in zip(before, snapshot(head.weights)))


def test_grid_codes_with_clinical_rows_of_each_rows_class():
    encoded, labels, table = clinical_rows()
    codes = make_grid_codes(CLINICAL, columns=3, seed=1, clinical=table)
    assert codes["clinical"].shape == (21, CLINICAL_CODES)
    indices = codes["clinical"][:, 0].astype(int)
    np.testing.assert_array_equal(labels[indices], np.repeat(range(7), 3))


MIRRORED_SCRIPT = textwrap.dedent("""
    import dataclasses, sys
    import keras, numpy as np, tensorflow as tf
    from dermnet.runs.strategy import make_strategy
    mirrored = make_strategy("mirrored")  # DERMNET_LOGICAL_CPUS=2: two replicas
    from tests.gan.test_model import TINY, make_model, real_batch

    # Minibatch stddev groups samples within a replica, so it differs by design.
    network = dataclasses.replace(TINY, use_minibatch_stddev=False)
    real = tf.data.Dataset.from_tensors(real_batch(8, batch=8))

    def one_step(strategy):
        # SGD: Adam's step barely depends on the loss's scale, so it would hide a
        # replica-count error in the loss; SGD's is proportional to it.
        with strategy.scope():
            networks, model = make_model(8, True, network,
                                         optimizer=lambda: keras.optimizers.SGD(0.01))
        model.fade_in.assign(0.5)
        model.images_seen.assign(40)
        before = [keras.ops.convert_to_numpy(v) for v in sum(networks.weights.values(), [])]
        model.fit(real, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
        after = [keras.ops.convert_to_numpy(v) for v in sum(networks.weights.values(), [])]
        return before, after

    before, single = one_step(tf.distribute.get_strategy())
    _, double = one_step(mirrored)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(before, single))
    gap = max(float(np.abs(a - b).max()) for a, b in zip(single, double))
    print(mirrored.num_replicas_in_sync, moved, gap)
""")


@pytest.mark.slow
def test_two_mirrored_replicas_take_the_single_replica_step():
    environment = os.environ | {"DERMNET_LOGICAL_CPUS": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True,
                            text=True, cwd=ROOT, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    replicas, moved, gap = result.stdout.split()[-3:]
    assert int(replicas) == 2
    assert float(moved) > 1e-3  # the step changed the weights ...
    assert float(gap) < 1e-5    # ... and two half batches changed them alike
