"""The progressive InfoGAN's training model: one ``keras.Model`` per growth stage.

    GanNetworks     the run's three growing networks: generator, critic (discriminator with
                    the Q head) and the generator's weight average (EMA); ``build_stage``
                    returns the InfoGAN of one stage, sharing their weights
    InfoGAN         keras.Model with its own ``compile`` and ``train_step``: n critic steps
                    (WGAN-GP + drift + InfoGAN loss on generated images), one generator step,
                    then the EMA update; metric trackers in ``metrics``
    GrowthTracker   callback feeding the schedule in: images seen, fade-in weight, learning rate
    draw_codes      in-graph code batches, the distributions of ``gan.codes.make_code_batch``;
                    with a ``gan.clinical.ClinicalTable``, each sample's clinical code is a
                    real training row of its class (``draw_clinical_codes``)
    make_grid_codes one row per class code, the same noise down every column

Randomness is stateless: the codes and the gradient penalty's interpolation weights of a
step derive from (seed, images seen), so a resumed run repeats an uninterrupted one. Under
``tf.distribute`` every replica draws the codes of the whole global batch and keeps its own
rows, so N replicas train on exactly the samples one replica would, and each replica's mean
loss is divided by N before the gradients are summed (docs/gan.md).
TensorFlow-specific (``tf.GradientTape``, ``tf.distribute``, stateless random ops).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from dermnet.compat import merge_call
from gan.clinical import ClinicalTable
from gan.codes import make_code_batch
from gan.config import NetworkConfig
from gan.losses import (
    categorical_information_loss,
    clinical_information_loss,
    continuous_information_loss,
    drift_penalty,
    generator_loss,
    gradient_penalty,
)
from gan.networks import ProgressiveDiscriminator, ProgressiveGenerator
from gan.schedule import GrowthSchedule, schedule_at

LABEL_METRIC = "real_class_loss"  # Q's cross-entropy on labelled real images
METRICS = ("critic_loss", "generator_loss", "wasserstein_distance", "gradient_penalty",
           "drift", "info_categorical", "info_continuous", LABEL_METRIC)
CLINICAL_METRIC = "info_clinical"  # tracked too when the network has clinical codes


class GanNetworks:
    """The generator, the critic and the generator's average, every resolution's layers.

    The average starts as an exact copy of the generator; ``weights`` lists every variable
    of the three, the run's network state whatever the stage. With clinical codes, training
    stages need ``clinical``, the table the codes are sampled from.
    """

    def __init__(self, config: NetworkConfig, clinical: ClinicalTable | None = None):
        self.config = config
        self.clinical = clinical
        self.generator = ProgressiveGenerator(config)
        self.discriminator = ProgressiveDiscriminator(config)
        self.average_generator = ProgressiveGenerator(config)
        for average, weight in zip(self.average_generator.weights, self.generator.weights):
            average.assign(weight)

    @property
    def weights(self) -> dict[str, list]:
        return {"generator": self.generator.weights,
                "discriminator": self.discriminator.weights,
                "average_generator": self.average_generator.weights}

    def build_stage(self, resolution: int, fade: bool, seed: int = 0) -> InfoGAN:
        """The InfoGAN of one stage (uncompiled); build it in the strategy's scope."""
        return InfoGAN(self.generator.build(resolution, fade),
                       self.discriminator.build(resolution, fade),
                       self.average_generator.build(resolution, fade),
                       config=self.config, fade=fade, seed=seed, clinical=self.clinical)


class InfoGAN(keras.Model):
    """WGAN-GP InfoGAN training on one stage's models; ``fit`` it on batches of real images,
    float32 [B, R, R, 3] in [-1, 1], with a ``GrowthTracker`` among the callbacks."""

    def __init__(self, generator, discriminator, average_generator, *,
                 config: NetworkConfig, fade: bool, seed: int = 0,
                 clinical: ClinicalTable | None = None, **kwargs):
        _check_clinical_table(config, clinical)
        super().__init__(**kwargs)
        self.generator = generator                  # codes + alpha -> images
        self.discriminator = discriminator          # image + alpha -> score and Q outputs
        self.average_generator = average_generator  # EMA of generator: for sampling only
        self.network_config = config
        self.fade = fade                            # a new block is fading in
        self.seed = seed
        self.clinical = clinical                    # real rows to sample clinical codes from
        # Set by GrowthTracker before every step; read in the graph, never written there.
        self.fade_in = keras.Variable(1.0, trainable=False, name="fade_in")
        self.images_seen = keras.Variable(0, dtype="int64", trainable=False, name="images_seen")
        names = METRICS + ((CLINICAL_METRIC,) if clinical is not None else ())
        self.trackers = [keras.metrics.Mean(name=name) for name in names]
        self.built = True  # the sub-models are built; InfoGAN has no call() to trace
        self._check_alignment()

    def _check_alignment(self) -> None:
        shapes = [tuple(weight.shape) for weight in self.generator.weights]
        averages = [tuple(weight.shape) for weight in self.average_generator.weights]
        if shapes != averages:
            raise ValueError("the average generator does not match the generator")

    @property
    def metrics(self):
        return self.trackers

    def compile(self, generator_optimizer, discriminator_optimizer, *,
                critic_steps: int = 1,        # n_critic: critic updates per generator update
                gradient_weight: float = 10.0,  # WGAN-GP lambda
                drift_weight: float = 0.001,  # drift penalty epsilon
                info_weight: float = 1.0,     # InfoGAN lambda
                average_decay: float = 0.999,  # EMA decay of the average generator
                label_weight: float = 1.0,    # Q's class loss on labelled real images
                continuous_weight: float = 1.0,  # extra factor on the continuous codes' term
                **kwargs):
        super().compile(optimizer=None, jit_compile=False, **kwargs)
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer
        # Built now, so that a checkpoint's optimizer state can be loaded before fit.
        generator_optimizer.build(self.generator.trainable_weights)
        discriminator_optimizer.build(self.discriminator.trainable_weights)
        self.critic_steps = critic_steps
        self.gradient_weight = gradient_weight
        self.drift_weight = drift_weight
        self.info_weight = info_weight
        self.average_decay = average_decay
        self.label_weight = label_weight
        self.continuous_weight = continuous_weight

    def train_step(self, data):
        """``critic_steps`` critic updates, each on this batch of real images with new codes
        (as keras-io's WGAN-GP), one generator update, then the weight average's update.
        ``critic_loss`` is the critic's whole objective, ``generator_loss`` the generator's;
        the other metrics are the critic step's terms.

        ``data`` is real images, or (real images, their one-hot labels [B, classes]): with
        labels and ``label_weight`` > 0 the Q head also learns the real images' classes
        (semi-supervised InfoGAN, Spurr et al. 2017), which ties class code k to lesion
        class k; without, the categorical code is InfoGAN's unsupervised one, whose
        categories need not match the lesion classes (metric ``real_class_loss``: 0)."""
        real, labels = data if isinstance(data, (tuple, list)) else (data, None)
        local = ops.shape(real)[0]  # this replica's share of the global batch
        fade_in = ops.full((local, 1), ops.cast(self.fade_in, "float32"))  # [b, 1]
        if self.fade:
            real = compute_faded_reals(real, self.fade_in)
        seed = tf.stack([tf.constant(self.seed, tf.int64),
                         tf.convert_to_tensor(self.images_seen.value)])  # [2]
        for step in range(self.critic_steps):
            codes = self._replica_rows(self._draw_codes, _fold(seed, 2 * step), local)
            mix = self._replica_rows(_draw_mix, _fold(seed, 2 * step + 1), local)
            self._critic_step(real, labels, codes, fade_in, mix)
        codes = self._replica_rows(self._draw_codes, _fold(seed, 2 * self.critic_steps), local)
        self._generator_step(codes, fade_in)
        update_average(self.average_generator.weights, self.generator.weights,
                       self.average_decay)
        return {tracker.name: tracker.result() for tracker in self.trackers}

    def _draw_codes(self, seed, batch, config):
        return draw_codes(seed, batch, config, self.clinical)

    def _replica_rows(self, draw, seed, local):
        """This replica's rows of ``draw(seed, global batch)``: replica r of N keeps rows
        r*b..(r+1)*b-1, the rows of the real images the strategy gave it."""
        replicas = self.distribute_strategy.num_replicas_in_sync
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        values = draw(seed, local * replicas, self.network_config)
        start = ops.cast(replica, "int32") * local
        return tf.nest.map_structure(lambda value: value[start:start + local], values)

    def _critic_step(self, real, labels, codes, fade_in, mix):
        fake = self.generator(codes | {"alpha": fade_in}, training=True)
        with tf.GradientTape() as tape:
            real_outputs = self.discriminator({"image": real, "alpha": fade_in}, training=True)
            fake_outputs = self.discriminator({"image": fake, "alpha": fade_in}, training=True)
            distance = ops.mean(real_outputs["score"]) - ops.mean(fake_outputs["score"])
            penalty = gradient_penalty(
                lambda images: self.discriminator({"image": images, "alpha": fade_in},
                                                  training=True)["score"],
                real, fake, weight=self.gradient_weight, alpha=mix)
            drift = drift_penalty(real_outputs["score"], self.drift_weight)
            information = self._information(fake_outputs, codes)
            labelled = 0.0
            if labels is not None and self.label_weight:
                labelled = categorical_information_loss(real_outputs["categorical_logits"],
                                                        labels)
            loss = (-distance + penalty + drift + self.label_weight * labelled
                    + self.info_weight * self._weighted(information))
            share = self._replica_share(loss)
        self._apply(self.discriminator_optimizer, self.discriminator, tape, share)
        terms = {"critic_loss": loss, "wasserstein_distance": distance,
                 "gradient_penalty": penalty, "drift": drift,
                 LABEL_METRIC: labelled} | information
        for name, value in terms.items():
            self._metric(name).update_state(value)

    def _generator_step(self, codes, fade_in):
        with tf.GradientTape() as tape:
            fake = self.generator(codes | {"alpha": fade_in}, training=True)
            outputs = self.discriminator({"image": fake, "alpha": fade_in}, training=True)
            information = self._information(outputs, codes)
            loss = (generator_loss(outputs["score"])
                    + self.info_weight * self._weighted(information))
            share = self._replica_share(loss)
        self._apply(self.generator_optimizer, self.generator, tape, share)
        self._metric("generator_loss").update_state(loss)

    def _information(self, outputs, codes) -> dict:
        """InfoGAN's code losses on generated images, -log Q(code | image), by metric name:
        the class, the continuous codes and, with clinical codes, the clinical code."""
        terms = {
            "info_categorical": categorical_information_loss(outputs["categorical_logits"],
                                                             codes["categorical"]),
            "info_continuous": continuous_information_loss(outputs["continuous_mean"],
                                                           outputs["continuous_log_std"],
                                                           codes["continuous"])}
        if self.clinical is not None:
            terms[CLINICAL_METRIC] = clinical_information_loss(outputs["clinical_logits"],
                                                               codes["clinical"])
        return terms

    def _weighted(self, information: dict):
        """The information terms summed, the continuous one times ``continuous_weight``."""
        return sum(value * (self.continuous_weight if name == "info_continuous" else 1.0)
                   for name, value in information.items())

    def _replica_share(self, loss):
        """This replica's share of the global mean loss: the optimizer sums the replicas'
        gradients, so each of N replicas' mean losses must count 1/N."""
        return loss / self.distribute_strategy.num_replicas_in_sync

    def _apply(self, optimizer, network, tape, share):
        weights = network.trainable_weights
        optimizer.apply(tape.gradient(share, weights), weights)

    def _metric(self, name: str):
        return next(tracker for tracker in self.trackers if tracker.name == name)

    def sample(self, codes: dict, fade_in: float = 1.0) -> np.ndarray:
        """Images of the average generator, float32 [B, R, R, 3], for numpy ``codes``."""
        inputs = dict(codes) | {"alpha": np.full((len(codes["noise"]), 1), fade_in, "float32")}
        return ops.convert_to_numpy(self.average_generator(inputs, training=False))


def compute_faded_reals(images, fade_in):
    """alpha * images + (1 - alpha) * (their half-resolution copy, upsampled): the real
    images cross-fade between resolutions with the generator's output (Karras et al.'s
    ``process_reals``), so the critic cannot tell the stages apart by sharpness alone."""
    coarse = ops.average_pool(images, pool_size=2, strides=2)  # [B, R/2, R/2, 3]
    coarse = ops.repeat(ops.repeat(coarse, 2, axis=1), 2, axis=2)  # [B, R, R, 3]
    fade_in = ops.cast(fade_in, images.dtype)
    return coarse + fade_in * (images - coarse)


def update_average(averages, weights, decay: float) -> None:
    """average <- decay * average + (1 - decay) * weight, for each pair, on every replica.

    A replica may not assign a mirrored variable on its own; like Keras' optimizers, the
    update runs in cross-replica context (``merge_call``) through ``extended.update``.
    """
    pairs = [(average.value, weight.value) for average, weight in zip(averages, weights)]

    def blend(average, weight):
        return average.assign(decay * average + (1.0 - decay) * weight)

    def update(distribution, pairs):
        for average, weight in pairs:
            distribution.extended.update(average, blend, args=(weight,), group=False)

    merge_call(update, pairs)


def _fold(seed, purpose: int):
    """A new int64 seed pair for one use (codes, interpolation weights) of a step's seed."""
    return tf.random.experimental.stateless_fold_in(seed, purpose)


def draw_codes(seed, batch, config: NetworkConfig,
               clinical: ClinicalTable | None = None) -> dict:
    """noise N(0, 1) [B, Z], one-hot classes, uniform over K [B, K], continuous codes
    U(-1, 1) [B, C], from the int seed pair ``seed`` [2]; with a ``clinical`` table also
    ``clinical`` [B, width], each row a real training row of the sample's class."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    noise = tf.random.stateless_normal([batch, config.latent_size], seeds[0])
    classes = tf.random.stateless_uniform([batch], seeds[1], 0, config.num_classes,
                                          dtype=tf.int32)
    continuous = tf.random.stateless_uniform([batch, config.continuous_codes], seeds[2],
                                             -1.0, 1.0)
    codes = {"noise": noise, "categorical": tf.one_hot(classes, config.num_classes),
             "continuous": continuous}
    if clinical is not None:  # a seed of its own: the other draws stay as without it
        codes["clinical"] = draw_clinical_codes(_fold(seeds[1], 1), classes, clinical)
    return codes


def draw_clinical_codes(seed, classes, table: ClinicalTable):
    """float32 [B, width]: for each class index of ``classes`` [B], the encoded vector of
    a uniformly drawn training row of that class, from the int seed pair ``seed`` [2]."""
    classes = tf.cast(classes, tf.int64)
    offsets = tf.gather(tf.constant(table.offsets, tf.int64), classes)  # [B]
    counts = tf.gather(tf.constant(table.counts, tf.int64), classes)    # [B], all > 0
    uniform = tf.random.stateless_uniform(tf.shape(classes), seed, dtype=tf.float64)  # [0, 1)
    within = tf.cast(tf.floor(uniform * tf.cast(counts, tf.float64)), tf.int64)
    within = tf.minimum(within, counts - 1)  # guards the rounding of u * count up to count
    return tf.gather(tf.constant(table.rows, tf.float32), offsets + within)


def _check_clinical_table(config: NetworkConfig, clinical: ClinicalTable | None) -> None:
    if config.clinical_codes and clinical is None:
        raise ValueError(f"network.clinical_codes={config.clinical_codes}: training needs "
                         "a clinical table (gan.clinical.make_clinical_table) to sample "
                         "the codes from")
    if clinical is not None and clinical.width != config.clinical_codes:
        raise ValueError(f"the clinical table has {clinical.width} entries per row, the "
                         f"network expects network.clinical_codes={config.clinical_codes}")


def _draw_mix(seed, batch, config=None):
    """The gradient penalty's per-example interpolation weights, U[0, 1] [B, 1, 1, 1]."""
    return tf.random.stateless_uniform([batch, 1, 1, 1], seed)


def make_grid_codes(config: NetworkConfig, columns: int, seed: int = 0,
                    clinical: ClinicalTable | None = None) -> dict:
    """Codes of a class grid: row k has class code k, column j the same noise and
    continuous codes in every row; rows * columns samples, row-major. With a ``clinical``
    table every sample also gets a real row of its class."""
    rows = config.num_classes
    classes = np.repeat(np.arange(rows), columns)
    clinical_rows = None
    if clinical is not None:
        clinical_rows = draw_clinical_codes(tf.constant([seed, 1], tf.int64), classes,
                                         clinical).numpy()
    codes = make_code_batch(seed, rows * columns, config, classes=classes,
                            clinical=clinical_rows)
    for name in ("noise", "continuous"):
        codes[name] = np.tile(codes[name][:columns], (rows, 1))
    return codes


class GrowthTracker(keras.callbacks.Callback):
    """Feeds the schedule to an InfoGAN: before every batch it sets the images seen, the
    fade-in weight and both learning rates, each a pure function of the images seen
    (``schedule_at``); after it, it counts the batch. ``images_seen`` is the count."""

    def __init__(self, schedule: GrowthSchedule, images_seen: int, batch_size: int):
        super().__init__()
        self.schedule = schedule
        self.images_seen = images_seen
        self.batch_size = batch_size  # global batch size: all replicas together

    def on_train_batch_begin(self, batch, logs=None):
        stage = schedule_at(self.schedule, self.images_seen)
        model = self.model
        model.images_seen.assign(self.images_seen)
        model.fade_in.assign(stage.fade_in if model.fade else 1.0)
        model.generator_optimizer.learning_rate = stage.learning_rate
        model.discriminator_optimizer.learning_rate = stage.learning_rate

    def on_train_batch_end(self, batch, logs=None):
        self.images_seen += self.batch_size
