"""The GAN's objectives: WGAN-GP with drift (Karras et al. 2018) plus InfoGAN's code loss.

    critic_loss, generator_loss   the Wasserstein estimate, each side's sign
    gradient_penalty              lambda * E[(||grad D(x_hat)|| - 1)^2], x_hat between real
                                  and fake with a per-example U[0, 1] weight (Gulrajani 2017)
    drift_penalty                 epsilon * E[D(real)^2]: keeps critic scores near zero
    information_loss              -log Q(code | G(z, code)): cross-entropy for categorical
                                  codes, Gaussian negative log-likelihood for continuous ones
    clinical_information_loss     the same for a clinical code (``dermnet.data.clinical``'s
                                  layout): age, age missing, sex and site, each its own way
    global_mean                   the reduction to use under a multi-replica strategy

Every loss returns the mean over the batch it is given. Under ``tf.distribute`` each
replica sees only its share of the global batch and the gradients of the replicas are
summed, so a per-replica mean must be divided by the number of replicas (equivalently:
``global_mean(per_example, global_batch_size)``), or the effective learning rate grows with
the GPU count.

``gradient_penalty`` is TensorFlow-specific: it differentiates the critic with respect to
its input inside the training step (``tf.GradientTape``). Everything else uses ``keras.ops``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from dermnet.data.vocabulary import SEXES

GRADIENT_PENALTY_WEIGHT = 10.0  # lambda of Gulrajani et al. 2017, kept by Karras et al.
DRIFT_WEIGHT = 0.001  # epsilon_drift of Karras et al. 2018, appendix A.1
HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)  # the Gaussian density's constant term


def critic_loss(real_scores, fake_scores):
    """mean D(fake) - mean D(real): the critic minimises it, maximising the Wasserstein gap."""
    return ops.mean(fake_scores) - ops.mean(real_scores)


def generator_loss(fake_scores):
    """-mean D(fake): the generator raises the critic's score of its samples."""
    return -ops.mean(fake_scores)


def drift_penalty(real_scores, weight: float = DRIFT_WEIGHT):
    """weight * mean D(real)^2: without it a WGAN critic's scores can drift far from zero."""
    return weight * ops.mean(ops.square(real_scores))


def compute_safe_norm(values, axis):
    """Euclidean norm over ``axis`` whose gradient is 0, not NaN, where the norm is 0.

    d sqrt(s) / ds is infinite at s = 0 and the chain rule turns it into NaN (inf * 0). The
    double ``where`` keeps both the value (exactly 0) and the gradient (exactly 0) finite,
    while leaving the norm exact everywhere else (no epsilon bias).
    """
    squares = ops.sum(ops.square(values), axis=axis)
    positive = squares > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, squares, 1.0)), 0.0)


def draw_interpolation_weights(batch_size, seed=None):
    """One weight per example from U[0, 1], shaped [B, 1, 1, 1] to broadcast over images.

    ``seed`` is an int (the same draw every call), a ``keras.random.SeedGenerator`` (a new
    draw every call, reproducible from its seed) or None (Keras's global generator).
    """
    return keras.random.uniform((batch_size, 1, 1, 1), 0.0, 1.0, seed=seed)


def gradient_penalty(critic,        # images [B, H, W, C] -> scores [B] or [B, 1]
                     real,          # [B, H, W, C] training images
                     fake,          # [B, H, W, C] generated; not differentiated through
                     weight: float = GRADIENT_PENALTY_WEIGHT,  # lambda
                     seed=None,     # see draw_interpolation_weights; unused with alpha
                     alpha=None):   # [B, 1, 1, 1] weights in [0, 1] to fix them (tests)
    """weight * mean over examples of (||d critic / d x_hat|| - 1)^2 (WGAN-GP).

    For an InfoGAN discriminator pass a ``critic`` that returns only the critic's scores.
    Each x_hat = real + alpha * (fake - real) with its own alpha; the gradient of the
    summed scores gives every example's own gradient as long as the critic treats examples
    independently. (Minibatch stddev couples them a little; the official code accepts that.)
    """
    real = ops.convert_to_tensor(real)
    fake = ops.stop_gradient(ops.convert_to_tensor(fake))
    if alpha is None:
        alpha = draw_interpolation_weights(ops.shape(real)[0], seed)
    mixed = real + ops.cast(alpha, real.dtype) * (fake - real)  # [B, H, W, C]
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        total = ops.sum(critic(mixed))  # sum of [B] or [B, 1] scores, recorded by the tape
    # A critic that ignores its input (a constant) has a zero gradient, not a missing one.
    gradients = tape.gradient(total, mixed,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)  # [B, H, W, C]
    norms = compute_safe_norm(gradients, axis=tuple(range(1, len(gradients.shape))))  # [B]
    return weight * ops.mean(ops.square(norms - 1.0))


def categorical_information_loss(logits, codes):
    """Mean softmax cross-entropy of one-hot ``codes`` [B, K] under Q's ``logits`` [B, K].

    ``logits`` and ``codes`` may also be matching sequences, one entry per categorical code
    (e.g. lesion type and body site); their cross-entropies add up.
    """
    if isinstance(logits, (list, tuple)):
        return sum(categorical_information_loss(*pair) for pair in zip(logits, codes, strict=True))
    log_probabilities = ops.log_softmax(logits, axis=-1)  # [B, K], stable for large logits
    return -ops.mean(ops.sum(ops.cast(codes, logits.dtype) * log_probabilities, axis=-1))


def continuous_information_loss(mean, log_std, codes):
    """Mean Gaussian negative log-likelihood of ``codes`` [B, K], summed over the K codes.

    Q predicts a factored Gaussian (``mean``, ``log_std``, both [B, K]). The constant
    0.5 * log(2 pi) per code is included, so the value is the true NLL (a perfect Q with
    log_std = 0 scores K * 0.919, not 0); it changes no gradient.
    """
    scaled = (ops.cast(codes, mean.dtype) - mean) * ops.exp(-log_std)  # [B, K]: z-scores
    per_code = HALF_LOG_TWO_PI + log_std + 0.5 * ops.square(scaled)  # [B, K]
    return ops.mean(ops.sum(per_code, axis=-1))


def clinical_information_loss(logits,  # [B, C] Q's clinical outputs, one per entry
                              codes,   # [B, C] the encoded clinical codes given to G
                              sexes: int = len(SEXES)):  # width of the sex one-hot group
    """-log Q(clinical code | image), mean over the batch, summed over four groups of the
    ``dermnet.data.clinical`` layout [age, age missing, sex one-hot, site one-hot]:

    - age (column 0, standardised): a unit-variance Gaussian's NLL without its constant,
      0.5 * (age - logit)^2, counted only where the age is present (column 1 is 0); the
      mean is over the whole batch, rows without an age adding 0, so a replica's mean
      stays a fixed share of the global one;
    - age missing (column 1): sigmoid cross-entropy;
    - sex (the next ``sexes`` columns) and site (the rest): softmax cross-entropy.
    """
    logits = ops.convert_to_tensor(logits)
    width = logits.shape[-1]
    if width is not None and width <= 2 + sexes:
        raise ValueError(f"a clinical code needs more than {2 + sexes} entries (age, age "
                         f"missing, {sexes} sexes, then sites), got {width}")
    codes = ops.cast(codes, logits.dtype)
    age, missing = codes[:, 0], codes[:, 1]  # [B], [B]
    present = 1.0 - missing
    age_loss = ops.mean(present * 0.5 * ops.square(age - logits[:, 0]))
    # softplus(x) - z x = -z log sigmoid(x) - (1 - z) log(1 - sigmoid(x)), stable in x.
    missing_loss = ops.mean(ops.softplus(logits[:, 1]) - missing * logits[:, 1])
    sex = slice(2, 2 + sexes)
    site = slice(2 + sexes, None)
    groups = categorical_information_loss([logits[:, sex], logits[:, site]],
                                          [codes[:, sex], codes[:, site]])
    return age_loss + missing_loss + groups


def information_loss(categorical_logits, categorical_codes, continuous_mean=None,
                     continuous_log_std=None, continuous_codes=None,
                     categorical_weight: float = 1.0,  # lambda for discrete codes (Chen: 1)
                     continuous_weight: float = 1.0):  # Chen et al. lower it if it dominates
    """InfoGAN's variational bound on -I(code; G(z, code)), averaged over the batch.

    Compute it on generated images only: the codes are the ones the generator was given,
    and real images have none. The Q head that produces these outputs shares the
    discriminator's trunk, so this loss trains the trunk, Q and the generator. Either part
    may be None (no categorical or no continuous code).
    """
    total = 0.0
    if categorical_logits is not None:
        total += categorical_weight * categorical_information_loss(categorical_logits,
                                                                   categorical_codes)
    if continuous_mean is not None:
        total += continuous_weight * continuous_information_loss(
            continuous_mean, continuous_log_std, continuous_codes)
    return total


def global_mean(values, global_batch_size: int):
    """sum(values) / global_batch_size: a per-replica share of the mean over all replicas.

    Summed across replicas (as ``tf.distribute`` does with gradients) these shares give the
    mean over the global batch. ``values`` are per-example losses of this replica.
    """
    values = ops.convert_to_tensor(values)
    return ops.sum(values) / ops.cast(global_batch_size, values.dtype)
