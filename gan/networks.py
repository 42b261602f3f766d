"""The progressive InfoGAN's generator and discriminator (Karras et al. 2018; Chen et al. 2016).

    NetworkConfig              sizes (gan.config): final resolution, latent and code sizes
    ProgressiveGenerator       blocks 4x4 .. final, one to-RGB per resolution
    ProgressiveDiscriminator   one from-RGB per resolution, blocks final .. 4x4, then the
                               WGAN critic head and the InfoGAN Q head on a shared trunk

Each object creates every layer for every resolution once; ``build(resolution, fade)``
returns a fresh functional ``keras.Model`` for one training stage that reuses those layers
(keras-io ``stylegan.py``'s ``grow``), so successive stages share their weights. While a new
block fades in, its output is blended with the previous resolution's, weighted by the
``alpha`` input: ``alpha * new + (1 - alpha) * old``.

How the structured code conditions the generator (``code_split``, see ``compute_code_parts``):

    "blocks"  The paper's rule (section 2.4: the code is split into parts, each conditioning
              the activations of its block). The categorical code (lesion type) and the
              clinical codes describe the whole lesion, so they join the noise at the 4x4
              input (scaled by ``code_gain``), as in Karras's conditional networks. The
              continuous codes are split into consecutive parts, one per block from 4x4
              upward (as evenly as possible, earlier blocks taking the extra codes). Every
              block's features are modulated between its two convolutions,
              ``features * (1 + scale) + shift``, with [scale, shift] an EqualizedDense of
              [one-hot class, the block's continuous part] (StyleGAN's style modulation,
              Karras et al. 2019; a class-conditional one like BigGAN's). Blocks above the
              last part see the class only: InfoGAN's continuous codes are for coarse
              factors. The class enters every block because, given only at the input, it
              was forgotten each time a new block faded in (the Q head's class loss rose
              back towards log 7 at every stage on the phantom dataset).
    "input"   Plain InfoGAN: every code joins the noise at the 4x4 input.

Image and code preparation (square cropping, random code batches) lives in ``gan/codes.py``
and is re-exported here. This module imports ``keras`` only, never ``tensorflow``, so the
networks build under every Keras 3 backend; its two extra layers are registered.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from gan.codes import make_code_batch, prepare_real_images, square_crop_or_pad
from gan.config import START_RESOLUTION, NetworkConfig
from gan.layers import (
    HE_GAIN,
    EqualizedConv2D,
    EqualizedDense,
    MinibatchStdDev,
    PixelNormalization,
)

__all__ = ["CodeModulation", "FadeIn", "code_gain", "NetworkConfig", "ProgressiveDiscriminator",
           "ProgressiveGenerator", "compute_code_parts", "count_parameters", "make_code_batch",
           "prepare_real_images", "square_crop_or_pad"]

SLOPE = 0.2           # LeakyReLU slope throughout (Karras et al.)


def compute_code_parts(config: NetworkConfig) -> dict[int, tuple[int, int]]:
    """Resolution -> (start, stop) of the continuous codes that modulate that block.

    "blocks": K codes over B blocks make min(K, B) consecutive parts, sizes as numpy's
    ``array_split`` (4 codes over 8 blocks: one each at 4, 8, 16 and 32; 5 over 2: 3 + 2).
    "input": no part; all codes enter with the noise.
    """
    if config.code_split == "input":
        return {}
    count = min(config.continuous_codes, len(config.resolutions))
    sizes = [len(part) for part in np.array_split(range(config.continuous_codes), count)]
    stops = np.cumsum(sizes).tolist()
    return {resolution: (stop - size, stop)
            for resolution, size, stop in zip(config.resolutions, sizes, stops)}


def code_gain(config: NetworkConfig, name: str) -> float:
    """The factor a code part is scaled by at the generator's input: it makes the part's
    expected norm equal the normalised noise's, sqrt(latent_size).

    Karras et al.'s conditional networks pixel-normalise [noise, one-hot] together; with
    128 noise dimensions a one-hot then weighs as much as one noise dimension, and on the
    phantom dataset the generator ignored it (the Q head's class loss stayed at log 7). Here
    the noise is normalised alone and every code part weighs as much as all the noise:
    a one-hot (norm 1) is scaled by sqrt(Z), U(-1, 1) codes (expected squared norm K/3) by
    sqrt(3Z/K), and a clinical vector, whose entries the caller keeps near unit scale, by
    sqrt(Z/C).
    """
    latent = config.latent_size
    sizes = {"categorical": 1, "continuous": config.continuous_codes / 3.0,
             "clinical": config.clinical_codes}
    if name not in sizes or sizes[name] <= 0:
        raise ValueError(f"no code part {name!r} in this network")
    return math.sqrt(latent / sizes[name])


def count_parameters(model) -> int:
    """Scalars in the distinct weights of a model or layer (shared variables count once)."""
    unique = {id(variable): variable for variable in model.weights}
    return sum(math.prod(variable.shape) for variable in unique.values())


@keras.saving.register_keras_serializable(package="dermnet")
class CodeModulation(keras.layers.Layer):
    """features * (1 + scale) + shift, [scale, shift] = EqualizedDense(selected code).

    Inputs ``[features [B, H, W, C], code [B, L + K]]``. The selected code is the first
    ``leading`` columns (the one-hot class) followed by columns ``leading + start`` to
    ``leading + stop`` (this block's continuous part; start == stop: none). The dense has
    gain 1 (a linear map) and zero biases, so a zero code leaves the features unchanged.
    """

    def __init__(self, start: int, stop: int, leading: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not (0 <= start <= stop and leading >= 0 and leading + stop - start > 0):
            raise ValueError(f"CodeModulation needs 0 <= start <= stop, leading >= 0 and at "
                             f"least one code column, got {start}, {stop}, {leading}")
        self.start = start
        self.stop = stop
        self.leading = leading

    def build(self, input_shape):
        features_shape, _ = input_shape
        self.affine = EqualizedDense(2 * features_shape[-1], gain=1.0, name="affine")
        self.affine.build((None, self.leading + self.stop - self.start))

    def call(self, inputs):
        features, code = inputs
        lead = self.leading
        selected = ops.concatenate([code[:, :lead],
                                    code[:, lead + self.start:lead + self.stop]], axis=-1)
        style = self.affine(selected)  # [B, 2C]
        scale, shift = ops.split(style[:, None, None, :], 2, axis=-1)  # [B, 1, 1, C] each
        return features * (1.0 + scale) + shift

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return super().get_config() | {"start": self.start, "stop": self.stop,
                                       "leading": self.leading}


@keras.saving.register_keras_serializable(package="dermnet")
class FadeIn(keras.layers.Layer):
    """alpha * new + (1 - alpha) * old, for inputs ``[old, new, alpha [B, 1]]``.

    This form (not ``old + alpha * (new - old)``) makes alpha = 0 and alpha = 1 return
    exactly the old and the new path.
    """

    def call(self, inputs):
        old, new, alpha = inputs
        alpha = ops.reshape(ops.cast(alpha, new.dtype), (-1,) + (1,) * (len(new.shape) - 1))
        return alpha * new + (1.0 - alpha) * old

    def compute_output_shape(self, input_shape):
        return input_shape[1]


def _activate(features, normalize: bool):
    """LeakyReLU(0.2), then pixel norm in the generator."""
    features = keras.layers.LeakyReLU(SLOPE)(features)
    return PixelNormalization()(features) if normalize else features


def _check_stage(config: NetworkConfig, resolution: int, fade: bool) -> None:
    if resolution not in config.resolutions:
        raise ValueError(f"resolution must be one of {config.resolutions}, got {resolution}")
    if fade and resolution == START_RESOLUTION:
        raise ValueError("fade=True needs a previous resolution; 4x4 has none")


class ProgressiveGenerator:
    """Codes -> images [B, R, R, 3] (linear, meant to lie in [-1, 1]) for any stage R.

    ``blocks[R]`` is a functional sub-model (the 4x4 one takes the codes, later ones take
    the previous features and, when they have a code part, the continuous codes);
    ``to_rgb[R]`` is a 1x1 EqualizedConv2D with gain 1. All are built on construction, so
    ``weights`` lists every variable at once (for an EMA copy or a checkpoint).
    """

    def __init__(self, config: NetworkConfig):
        self.config = config
        self.code_parts = compute_code_parts(config)
        self.blocks = {START_RESOLUTION: self._make_first_block()}
        self.to_rgb = {}
        for resolution in config.resolutions:
            if resolution > START_RESOLUTION:
                self.blocks[resolution] = self._make_block(resolution)
            self.to_rgb[resolution] = EqualizedConv2D(3, kernel_size=1, gain=1.0,
                                                      name=f"to_rgb_{resolution}x{resolution}")
            self.to_rgb[resolution].build((None, resolution, resolution,
                                           config.filters_at(resolution)))

    @property
    def weights(self) -> list:
        parts = [*self.blocks.values(), *self.to_rgb.values()]
        return [variable for part in parts for variable in part.weights]

    def _code_inputs(self) -> dict:
        config = self.config
        inputs = {"noise": keras.Input((config.latent_size,), name="noise"),
                  "categorical": keras.Input((config.num_classes,), name="categorical"),
                  "continuous": keras.Input((config.continuous_codes,), name="continuous")}
        if config.clinical_codes:
            inputs["clinical"] = keras.Input((config.clinical_codes,), name="clinical")
        return inputs

    def _modulate(self, resolution: int, features, code):
        """Blocks mode: every block is modulated by the class and its continuous part."""
        if self.config.code_split == "input":
            return features
        start, stop = self.code_parts.get(resolution, (0, 0))
        layer = CodeModulation(start, stop, leading=self.config.num_classes,
                               name="code_modulation")
        return layer([features, code])

    def _make_first_block(self) -> keras.Model:
        """[pixel-norm(noise), scaled codes] -> dense -> 4x4 -> (modulate) -> conv3x3."""
        config = self.config
        filters = config.filters_at(START_RESOLUTION)
        inputs = self._code_inputs()
        joined = [PixelNormalization(name="noise_norm")(inputs["noise"])]  # norm sqrt(Z)
        names = ["categorical", "clinical"] + (["continuous"] if config.code_split == "input"
                                               else [])
        for name in names:
            if name in inputs:
                gain = code_gain(config, name)
                joined.append(keras.layers.Rescaling(gain, name=f"{name}_gain")(inputs[name]))
        latent = keras.layers.Concatenate()(joined)  # [B, Z + codes]
        # Karras's dense gain sqrt(2) / 4 (matching their Theano original) over 16 outputs.
        features = EqualizedDense(16 * filters, gain=HE_GAIN / 4)(latent)  # [B, 16F]
        features = _activate(keras.layers.Reshape((4, 4, filters))(features), True)
        if config.code_split == "blocks":
            code = keras.layers.Concatenate(name="block_code")(
                [inputs["categorical"], inputs["continuous"]])  # [B, classes + K]
            features = self._modulate(START_RESOLUTION, features, code)
        features = _activate(EqualizedConv2D(filters)(features), True)  # [B, 4, 4, F]
        return keras.Model(inputs, features, name="generator_block_4x4")

    def _make_block(self, resolution: int) -> keras.Model:
        """upsample 2x -> conv3x3 -> (modulate) -> conv3x3, pixel norm after each conv."""
        config, half = self.config, resolution // 2
        inputs = [keras.Input((half, half, config.filters_at(half)))]
        if config.code_split == "blocks":  # [one-hot class, continuous codes]
            inputs.append(keras.Input((config.num_classes + config.continuous_codes,)))
        features = keras.layers.UpSampling2D(2, interpolation="nearest")(inputs[0])
        features = _activate(EqualizedConv2D(config.filters_at(resolution))(features), True)
        features = self._modulate(resolution, features, inputs[-1])
        features = _activate(EqualizedConv2D(config.filters_at(resolution))(features), True)
        return keras.Model(inputs, features, name=f"generator_block_{resolution}x{resolution}")

    def _call_block(self, resolution: int, features, code):
        if self.config.code_split == "blocks":
            return self.blocks[resolution]([features, code])
        return self.blocks[resolution](features)

    def build(self, resolution: int, fade: bool = False) -> keras.Model:
        """The stage-``resolution`` model; with ``fade``, blended with the previous stage."""
        _check_stage(self.config, resolution, fade)
        inputs = self._code_inputs() | {"alpha": keras.Input((1,), name="alpha")}
        codes = {name: tensor for name, tensor in inputs.items() if name != "alpha"}
        features = previous = self.blocks[START_RESOLUTION](codes)  # [B, 4, 4, F]
        code = keras.layers.Concatenate()([inputs["categorical"], inputs["continuous"]])
        for stage in self.config.resolutions[1:self.config.resolutions.index(resolution) + 1]:
            previous = features
            features = self._call_block(stage, features, code)
        image = self.to_rgb[resolution](features)  # [B, R, R, 3]
        if fade:
            old = self.to_rgb[resolution // 2](previous)  # [B, R/2, R/2, 3]
            old = keras.layers.UpSampling2D(2, interpolation="nearest")(old)
            image = FadeIn()([old, image, inputs["alpha"]])
        # A float32 output even under a mixed-precision policy.
        image = keras.layers.Activation("linear", dtype="float32", name="image")(image)
        return keras.Model(inputs, image, name=f"generator_{resolution}x{resolution}")


class ProgressiveDiscriminator:
    """Images [B, R, R, 3] -> the critic's score and the Q head's code estimates.

    ``from_rgb[R]`` (1x1 conv + LeakyReLU) and ``blocks[R]`` (conv3x3 -> conv3x3 -> 2x2
    average pool, R > 4) are functional sub-models; ``blocks[4]`` is the shared trunk
    (minibatch stddev -> conv3x3 -> dense), ``heads`` the dense layers on it. The Q head
    is one hidden EqualizedDense on the trunk, then linear outputs: categorical logits,
    a mean and a log standard deviation per continuous code (a factored Gaussian), and,
    with clinical codes, ``clinical_logits``: one linear output per clinical entry, which
    the caller reads as logits for its one-hot groups and as a mean for scalars like age.
    """

    def __init__(self, config: NetworkConfig):
        self.config = config
        self.from_rgb, self.blocks = {}, {}
        for resolution in config.resolutions:
            self.from_rgb[resolution] = self._make_from_rgb(resolution)
            self.blocks[resolution] = (self._make_trunk() if resolution == START_RESOLUTION
                                       else self._make_block(resolution))
        self.heads = self._make_heads()

    @property
    def weights(self) -> list:
        parts = [*self.from_rgb.values(), *self.blocks.values(), *self.heads.values()]
        return [variable for part in parts for variable in part.weights]

    def _make_from_rgb(self, resolution: int) -> keras.Model:
        image = keras.Input((resolution, resolution, 3))
        features = EqualizedConv2D(self.config.filters_at(resolution), kernel_size=1)(image)
        return keras.Model(image, _activate(features, False),
                           name=f"from_rgb_{resolution}x{resolution}")

    def _make_block(self, resolution: int) -> keras.Model:
        config = self.config
        features = inputs = keras.Input((resolution, resolution, config.filters_at(resolution)))
        features = _activate(EqualizedConv2D(config.filters_at(resolution))(features), False)
        features = _activate(EqualizedConv2D(config.filters_at(resolution // 2))(features),
                             False)
        features = keras.layers.AveragePooling2D(2)(features)  # [B, R/2, R/2, F(R/2)]
        return keras.Model(inputs, features,
                           name=f"discriminator_block_{resolution}x{resolution}")

    def _make_trunk(self) -> keras.Model:
        filters = self.config.filters_at(START_RESOLUTION)
        features = inputs = keras.Input((4, 4, filters))
        if self.config.use_minibatch_stddev:
            features = MinibatchStdDev(self.config.mbstd_group_size)(features)  # [B, 4, 4, F+1]
        features = _activate(EqualizedConv2D(filters)(features), False)
        features = keras.layers.Flatten()(features)  # [B, 16F]
        features = _activate(EqualizedDense(filters)(features), False)  # [B, F]
        return keras.Model(inputs, features, name="discriminator_block_4x4")

    def _make_heads(self) -> dict:
        config, trunk = self.config, self.config.filters_at(START_RESOLUTION)
        sizes = {"score": 1, "categorical_logits": config.num_classes,
                 "continuous_mean": config.continuous_codes,
                 "continuous_log_std": config.continuous_codes}
        if config.clinical_codes:
            sizes["clinical_logits"] = config.clinical_codes
        heads = {"q_hidden": EqualizedDense(config.q_units, name="q_hidden")}
        heads["q_hidden"].build((None, trunk))
        for name, units in sizes.items():
            heads[name] = EqualizedDense(units, gain=1.0, name=name)  # linear outputs
            heads[name].build((None, trunk if name == "score" else config.q_units))
        return heads

    def _apply_heads(self, trunk) -> dict:
        outputs = {"score": self.heads["score"](trunk)}  # [B, 1], the WGAN critic
        hidden = keras.layers.LeakyReLU(SLOPE)(self.heads["q_hidden"](trunk))  # [B, q_units]
        for name, head in self.heads.items():
            if name not in ("score", "q_hidden"):
                outputs[name] = head(hidden)
        return outputs

    def build(self, resolution: int, fade: bool = False) -> keras.Model:
        """The stage-``resolution`` critic; with ``fade``, blended with the previous stage."""
        _check_stage(self.config, resolution, fade)
        image = keras.Input((resolution, resolution, 3), name="image")
        alpha = keras.Input((1,), name="alpha")
        features = self.from_rgb[resolution](image)  # [B, R, R, F(R)]
        if resolution > START_RESOLUTION:
            features = self.blocks[resolution](features)  # [B, R/2, R/2, F(R/2)]
        if fade:
            old = keras.layers.AveragePooling2D(2)(image)  # [B, R/2, R/2, 3]
            features = FadeIn()([self.from_rgb[resolution // 2](old), features, alpha])
        for stage in reversed(self.config.resolutions[1:self.config.resolutions.index(resolution)]):
            features = self.blocks[stage](features)
        outputs = self._apply_heads(self.blocks[START_RESOLUTION](features))
        return keras.Model({"image": image, "alpha": alpha}, outputs,
                           name=f"discriminator_{resolution}x{resolution}")
