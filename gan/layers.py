"""The progressive GAN's building-block layers (Karras et al. 2018, section 4).

    EqualizedDense, EqualizedConv2D   weights stored as N(0, 1), scaled at run time by
                                      He's constant gain / sqrt(fan_in), biases start at zero
    PixelNormalization                each pixel's feature vector scaled to unit RMS
    MinibatchStdDev                   appends the group-wise standard deviation as a feature map

Nearest-neighbour upsampling and 2x2 average pooling need no custom layer: the networks use
``keras.layers.UpSampling2D`` and ``keras.layers.AveragePooling2D``.

Images are channels-last (NHWC). This module imports ``keras`` only, never ``tensorflow``,
so the networks build under every Keras 3 backend. Every layer is registered under the
``dermnet`` package and round-trips through ``get_config``.
"""

from __future__ import annotations

import math

import keras
from keras import ops

HE_GAIN = math.sqrt(2.0)  # He et al. 2015: keeps activations' variance through (leaky) ReLUs


def compute_runtime_scale(gain: float, fan_in: int) -> float:
    """The equalized-learning-rate multiplier: He's constant gain / sqrt(fan_in).

    Storing N(0, 1) weights and multiplying by this at every call (rather than drawing
    N(0, scale^2) once) makes Adam's per-weight step the same relative size for every layer,
    whatever its fan-in: the point of "equalized learning rate".
    """
    return gain / math.sqrt(fan_in)


def _unit_normal():
    return keras.initializers.RandomNormal(mean=0.0, stddev=1.0)


@keras.saving.register_keras_serializable(package="dermnet")
class EqualizedDense(keras.layers.Layer):
    """Dense over the last axis with equalized learning rate; no activation."""

    def __init__(self, units: int, gain: float = HE_GAIN, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"EqualizedDense units must be positive, got {units}")
        self.units = units
        self.gain = gain
        self.use_bias = use_bias

    def build(self, input_shape):
        fan_in = input_shape[-1]
        self.scale = compute_runtime_scale(self.gain, fan_in)
        self.kernel = self.add_weight(shape=(fan_in, self.units), initializer=_unit_normal(),
                                      name="kernel")
        self.bias = (self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
                     if self.use_bias else None)

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.kernel * self.scale)
        return outputs + self.bias if self.use_bias else outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return super().get_config() | {"units": self.units, "gain": self.gain,
                                       "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="dermnet")
class EqualizedConv2D(keras.layers.Layer):
    """Square 'same'-padded, stride-1 convolution with equalized learning rate; no activation.

    Stride 1 only: the progressive GAN resamples with separate upsampling and average-pooling
    layers, never with strided convolutions.
    """

    def __init__(self, filters: int, kernel_size: int = 3, gain: float = HE_GAIN,
                 use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if filters < 1 or kernel_size < 1:
            raise ValueError("EqualizedConv2D filters and kernel_size must be positive, "
                             f"got {filters} and {kernel_size}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.gain = gain
        self.use_bias = use_bias

    def build(self, input_shape):
        channels = input_shape[-1]
        self.scale = compute_runtime_scale(self.gain, self.kernel_size**2 * channels)
        shape = (self.kernel_size, self.kernel_size, channels, self.filters)  # HWIO
        self.kernel = self.add_weight(shape=shape, initializer=_unit_normal(), name="kernel")
        self.bias = (self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
                     if self.use_bias else None)

    def call(self, inputs):
        outputs = ops.conv(inputs, self.kernel * self.scale, strides=1, padding="same",
                           data_format="channels_last")
        return outputs + self.bias if self.use_bias else outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return super().get_config() | {"filters": self.filters,
                                       "kernel_size": self.kernel_size,
                                       "gain": self.gain, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="dermnet")
class PixelNormalization(keras.layers.Layer):
    """x / sqrt(mean(x^2 over channels) + epsilon): unit RMS feature vector at every pixel.

    Karras et al. use it in the generator after each convolution, in place of batch norm, to
    stop the generator's and critic's magnitudes from escalating.
    """

    def __init__(self, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        mean_square = ops.mean(ops.square(inputs), axis=-1, keepdims=True)  # [..., 1]
        return inputs * ops.rsqrt(mean_square + self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"epsilon": self.epsilon}


def compute_group_size(batch, group_size: int):
    """The largest divisor of ``batch`` that is at most ``group_size``.

    The official code uses min(group_size, batch) and fails unless the batch divides by it;
    we fall back to the largest divisor instead, so a batch of 6 with groups of 4 uses groups
    of 3, and a prime batch of 7 uses groups of 1 (a feature map of sqrt(epsilon)). A batch
    of 4, 8, ... or of 1 or 2 (the paper's 512x512 batch) behaves exactly as the official
    code. ``batch`` is a Python int when the shape is static (always under JAX) and a scalar
    tensor when it is not (a TensorFlow graph with a ``None`` batch).
    """
    if isinstance(batch, int):
        return max(size for size in range(1, min(group_size, batch) + 1) if batch % size == 0)
    candidates = ops.arange(1, group_size + 1, dtype="int32")  # [group_size]
    divides = ops.equal(ops.mod(ops.cast(batch, "int32"), candidates), 0)
    return ops.max(ops.where(divides, candidates, 1))


@keras.saving.register_keras_serializable(package="dermnet")
class MinibatchStdDev(keras.layers.Layer):
    """Appends one feature map: the standard deviation within a group of samples.

    Splits the batch into groups of ``group_size`` (sample n joins group member n // M of
    sub-batch m = n % M, as the official reshape does), takes each feature's stddev over the
    group, averages it over features and pixels, and appends that scalar as a constant map to
    every sample of the group. It lets the critic see the variety of a batch, which
    discourages mode collapse. See ``compute_group_size`` for batches not divisible by it.
    """

    def __init__(self, group_size: int = 4, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        if group_size < 1:
            raise ValueError(f"MinibatchStdDev group_size must be positive, got {group_size}")
        self.group_size = group_size
        self.epsilon = epsilon

    def call(self, inputs):
        batch, height, width, channels = ops.shape(inputs)
        group = compute_group_size(batch, self.group_size)
        values = ops.cast(inputs, "float32")  # stddev in float32 under mixed precision
        grouped = ops.reshape(values, (group, -1, height, width, channels))  # [G, M, H, W, C]
        centred = grouped - ops.mean(grouped, axis=0, keepdims=True)  # [G, M, H, W, C]
        stddev = ops.sqrt(ops.mean(ops.square(centred), axis=0) + self.epsilon)  # [M, H, W, C]
        stddev = ops.mean(stddev, axis=(1, 2, 3), keepdims=True)  # [M, 1, 1, 1]
        stddev = ops.tile(stddev, (group, height, width, 1))  # [N, H, W, 1], n -> m = n % M
        return ops.concatenate([inputs, ops.cast(stddev, inputs.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        return (*input_shape[:-1], None if channels is None else channels + 1)

    def get_config(self):
        return super().get_config() | {"group_size": self.group_size, "epsilon": self.epsilon}
