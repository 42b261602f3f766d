"""GAN losses with known values: WGAN arithmetic, the gradient penalty of linear, quadratic
and constant critics (finite gradients where the norm is 0), per-example U[0, 1]
interpolation, InfoGAN's code loss against numpy, the clinical code's loss by hand and
against numpy, and the multi-replica mean."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan.losses import (
    clinical_information_loss,
    compute_safe_norm,
    continuous_information_loss,
    critic_loss,
    draw_interpolation_weights,
    drift_penalty,
    generator_loss,
    global_mean,
    gradient_penalty,
    information_loss,
)

RNG = np.random.default_rng(0)
SHAPE = (6, 4, 4, 3)  # a batch of small images


def random(*shape):
    return RNG.normal(size=shape).astype("float32")


def test_wasserstein_losses_and_drift_arithmetic():
    real = np.array([1.0, 3.0], "float32")  # mean 2
    fake = np.array([-1.0, 0.0, 4.0], "float32")  # mean 1
    assert float(critic_loss(real, fake)) == pytest.approx(1.0 - 2.0)
    assert float(generator_loss(fake)) == pytest.approx(-1.0)
    assert float(drift_penalty(real)) == pytest.approx(0.001 * (1 + 9) / 2)
    assert float(drift_penalty(real, weight=0.5)) == pytest.approx(2.5)


def linear_critic(weights):
    """D(x) = sum(w * x) per example: its input gradient is w everywhere."""
    return lambda images: tf.reduce_sum(images * weights, axis=[1, 2, 3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_critic_penalty_is_exactly_weight_times_norm_minus_one_squared(seed):
    weights = random(*SHAPE[1:])
    expected = 10.0 * (np.linalg.norm(weights.astype(np.float64)) - 1.0) ** 2
    penalty = gradient_penalty(linear_critic(weights), random(*SHAPE), random(*SHAPE),
                               seed=seed)
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    unit = weights / np.linalg.norm(weights)  # a 1-Lipschitz critic pays nothing
    assert float(gradient_penalty(linear_critic(unit), random(*SHAPE), random(*SHAPE),
                                  weight=3.0, seed=seed)) == pytest.approx(0.0, abs=1e-9)


def test_quadratic_critic_shows_each_example_gets_its_own_alpha():
    # D(x) = |x|^2 / 2 has gradient x; from real = 0 to fake of norm 2 the gradient norm at
    # x_hat = alpha * fake is 2 alpha, so the penalty reads out the alphas.
    fake = random(*SHAPE)
    fake *= 2.0 / np.linalg.norm(fake.reshape(len(fake), -1), axis=1).reshape(-1, 1, 1, 1)
    alpha = np.array([0.0, 0.1, 0.25, 0.5, 0.9, 1.0], "float32").reshape(-1, 1, 1, 1)

    def quadratic(images):
        return 0.5 * tf.reduce_sum(tf.square(images), axis=[1, 2, 3])

    penalty = gradient_penalty(quadratic, np.zeros(SHAPE, "float32"), fake, alpha=alpha)
    expected = 10.0 * np.mean((2.0 * alpha.ravel() - 1.0) ** 2)
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    seeded = gradient_penalty(quadratic, np.zeros(SHAPE, "float32"), fake, seed=7)
    drawn = draw_interpolation_weights(SHAPE[0], seed=7)
    assert float(seeded) == pytest.approx(10.0 * np.mean((2.0 * np.ravel(drawn) - 1.0) ** 2),
                                          rel=1e-5)


def test_interpolation_weights_are_per_example_uniform_and_reproducible():
    alpha = np.asarray(draw_interpolation_weights(4096, seed=3))
    assert alpha.shape == (4096, 1, 1, 1)
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    assert abs(alpha.mean() - 0.5) < 0.02 and abs(alpha.var() - 1 / 12) < 0.005  # U[0, 1]
    assert len(np.unique(alpha)) > 4000  # one draw per example, not one per batch
    np.testing.assert_array_equal(draw_interpolation_weights(8, seed=3),
                                  draw_interpolation_weights(8, seed=3))
    generator = keras.random.SeedGenerator(3)
    first, second = (np.asarray(draw_interpolation_weights(8, generator)) for _ in range(2))
    assert not np.array_equal(first, second)  # a generator advances between steps
    again = keras.random.SeedGenerator(3)
    np.testing.assert_array_equal(draw_interpolation_weights(8, again), first)


@pytest.mark.parametrize("critic_kind", ["zero_weights", "ignores_input"])
def test_zero_input_gradient_costs_weight_times_one_with_finite_gradients(critic_kind):
    weights = tf.Variable(tf.zeros(SHAPE[1:]))
    bias = tf.Variable(0.5)

    def critic(images):
        if critic_kind == "ignores_input":
            return tf.fill([tf.shape(images)[0]], bias)
        return tf.reduce_sum(images * weights, axis=[1, 2, 3]) + bias

    with tf.GradientTape() as tape:
        penalty = gradient_penalty(critic, random(*SHAPE), random(*SHAPE), seed=0)
    assert float(penalty) == 10.0  # exactly: the norm is exactly 0
    gradients = tape.gradient(penalty, [weights, bias],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert all(np.all(np.isfinite(gradient.numpy())) for gradient in gradients)


def test_a_plain_norm_would_give_nan_where_the_safe_norm_gives_zero():
    values = tf.Variable(tf.zeros((2, 3)))
    with tf.GradientTape(persistent=True) as tape:
        plain = tf.reduce_sum(tf.norm(values, axis=1))
        safe = tf.reduce_sum(compute_safe_norm(values, axis=1))
    assert np.all(np.isnan(tape.gradient(plain, values).numpy()))  # what the guard prevents
    np.testing.assert_array_equal(tape.gradient(safe, values).numpy(), 0.0)
    np.testing.assert_allclose(compute_safe_norm(np.array([[3.0, 4.0], [0.0, 0.0]]), axis=1),
                               [5.0, 0.0])


def test_gradient_penalty_trains_a_critic_towards_unit_gradient_norm():
    # Inside a compiled step with an unknown batch, as in a train_step.
    weights = tf.Variable(tf.fill(SHAPE[1:], 1.0))  # ||w|| = sqrt(48) ~ 6.9
    generator = keras.random.SeedGenerator(0)

    @tf.function(input_signature=[tf.TensorSpec((None, *SHAPE[1:]))] * 2)
    def step(real, fake):
        with tf.GradientTape() as tape:
            penalty = gradient_penalty(linear_critic(weights), real, fake, seed=generator)
        weights.assign_sub(0.01 * tape.gradient(penalty, weights))
        return penalty

    first = float(step(random(*SHAPE), random(*SHAPE)))
    for _ in range(50):
        last = float(step(random(*SHAPE), random(*SHAPE)))
    assert first == pytest.approx(10.0 * (math.sqrt(48) - 1.0) ** 2, rel=1e-5)
    assert last < 0.01 * first


def numpy_information_loss(logits, codes, mean, log_std, values):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    cross_entropy = -(codes * log_softmax).sum(axis=1).mean()
    variance = np.exp(2 * log_std)
    nll = (0.5 * np.log(2 * np.pi * variance) + (values - mean) ** 2 / (2 * variance))
    return cross_entropy, nll.sum(axis=1).mean()


def test_information_loss_matches_numpy():
    logits, mean, log_std, values = (random(5, 7) * 3, random(5, 2), random(5, 2) * 0.5,
                                     random(5, 2))
    codes = np.eye(7, dtype="float32")[RNG.integers(0, 7, 5)]
    cross_entropy, nll = numpy_information_loss(logits, codes, mean, log_std, values)
    got = information_loss(logits, codes, mean, log_std, values)
    assert float(got) == pytest.approx(cross_entropy + nll, rel=1e-5)
    weighted = information_loss(logits, codes, mean, log_std, values,
                                categorical_weight=2.0, continuous_weight=0.1)
    assert float(weighted) == pytest.approx(2 * cross_entropy + 0.1 * nll, rel=1e-5)
    assert float(information_loss(logits, codes)) == pytest.approx(cross_entropy, rel=1e-5)
    assert float(information_loss(None, None, mean, log_std, values)) == pytest.approx(nll,
                                                                                       rel=1e-5)


def test_information_loss_known_values_and_several_categorical_codes():
    # Uniform logits over K classes cost log K; a perfect unit Gaussian costs 0.5 log(2 pi).
    uniform = np.zeros((3, 7), "float32")
    codes = np.eye(7, dtype="float32")[[0, 3, 6]]
    sites = np.eye(15, dtype="float32")[[1, 2, 14]]
    both = information_loss([uniform, np.zeros((3, 15), "float32")], [codes, sites])
    assert float(both) == pytest.approx(math.log(7) + math.log(15), rel=1e-6)
    zeros = np.zeros((3, 1), "float32")
    assert float(continuous_information_loss(zeros, zeros, zeros)) == pytest.approx(
        0.5 * math.log(2 * math.pi), rel=1e-6)
    huge = np.array([[1000.0, 0.0]], "float32")  # log-softmax, not log(softmax): no inf
    assert float(information_loss(huge, np.array([[0.0, 1.0]], "float32"))) == pytest.approx(
        1000.0)


def test_clinical_information_loss_by_hand():
    # Columns: age, age missing, 3 sexes, 2 sites. Row 0 has age 1.0; row 1 has none, so
    # its age logit (5.0) must not count.
    codes = np.array([[1.0, 0.0, 1, 0, 0, 0, 1],
                      [0.0, 1.0, 0, 0, 1, 1, 0]], "float32")
    logits = np.array([[3.0, 0.0, 0, 0, 0, 0, math.log(3)],
                       [5.0, 0.0, 0, 0, 0, 0, 0]], "float32")
    age = 0.5 * (1.0 - 3.0) ** 2 / 2  # mean over both rows, the missing one adding 0
    missing = math.log(2)             # sigmoid(0) = 1/2 for either label
    sex = math.log(3)                 # uniform over 3
    site = (-math.log(3 / 4) + math.log(2)) / 2  # p = 3/4, then uniform over 2
    expected = age + missing + sex + site
    assert float(clinical_information_loss(logits, codes)) == pytest.approx(expected, rel=1e-6)
    logits[1, 0] = -40.0  # the missing age's logit still does not count
    assert float(clinical_information_loss(logits, codes)) == pytest.approx(expected, rel=1e-6)
    logits[:, 1] = [-100.0, 100.0]  # confident and right: ~0, and no overflow
    assert float(clinical_information_loss(logits, codes)) == pytest.approx(
        expected - missing, abs=1e-6)
    logits[:, 1] = [100.0, -100.0]  # confident and wrong: 100 per row
    assert float(clinical_information_loss(logits, codes)) == pytest.approx(
        expected - missing + 100.0, rel=1e-6)


def numpy_clinical_loss(logits, codes):
    """The 20-entry HAM10000 layout, written out with numpy."""
    def cross_entropy(group_logits, group_codes):
        shifted = group_logits - group_logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -(group_codes * log_softmax).sum(axis=1).mean()

    present = codes[:, 1] == 0
    age = np.where(present, 0.5 * (codes[:, 0] - logits[:, 0]) ** 2, 0.0).mean()
    probability = 1 / (1 + np.exp(-logits[:, 1].astype(np.float64)))
    missing = -(codes[:, 1] * np.log(probability)
                + (1 - codes[:, 1]) * np.log(1 - probability)).mean()
    return (age + missing + cross_entropy(logits[:, 2:5], codes[:, 2:5])
            + cross_entropy(logits[:, 5:], codes[:, 5:]))


def test_clinical_information_loss_matches_numpy_on_the_ham10000_layout():
    batch = 9
    missing = RNG.integers(0, 2, batch).astype("float32")
    codes = np.concatenate([
        np.where(missing == 1, 0.0, random(batch)).astype("float32")[:, None],
        missing[:, None], np.eye(3, dtype="float32")[RNG.integers(0, 3, batch)],
        np.eye(15, dtype="float32")[RNG.integers(0, 15, batch)]], axis=1)
    logits = random(batch, 20) * 2
    assert float(clinical_information_loss(logits, codes)) == pytest.approx(
        numpy_clinical_loss(logits, codes), rel=1e-5)
    with pytest.raises(ValueError, match="needs more than 5 entries"):
        clinical_information_loss(logits[:, :5], codes[:, :5])


def test_global_mean_shares_add_up_to_the_global_mean():
    per_example = random(8)
    replicas = np.split(per_example, 2)  # two replicas of 4 examples each
    shares = [float(global_mean(part, 8)) for part in replicas]
    assert sum(shares) == pytest.approx(per_example.mean(), rel=1e-5)
    naive = sum(float(np.mean(part)) for part in replicas)  # per-replica means, summed
    assert naive == pytest.approx(2 * per_example.mean(), rel=1e-5)  # the bug it avoids
