"""Colour constancy as a layer inside the model: ``ShadesOfGray``.

Image banks differ in illuminant and camera: HAM10000's Austrian and Australian collections,
or ISIC archives from other clinics, cast whole images toward different colours, and a model
trained on one cast misreads another. Shades of Gray (Finlayson and Trezzi 2004) estimates the
illuminant of each image as the Minkowski p-norm of each channel and divides it out; with
p = 6 it was the colour normalisation of the winning ISIC 2019 entry (Gessert et al. 2020).

Inside the model it runs wherever the model runs (training, evaluation, prediction, export),
on raw 0-255 pixels, before the backbone's own pixel preprocessing. Backend-neutral.
"""

from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-6  # floor of an illuminant channel: a black image must not divide by zero


def compute_illuminant(images, power: float):
    """Per image and channel, the Minkowski ``power``-norm mean of pixels scaled to [0, 1],
    normalised to unit length: [B, 1, 1, 3]. Scaling first keeps x**6 inside float16."""
    scaled = ops.cast(images, "float32") / 255.0
    means = ops.mean(ops.power(scaled, power), axis=(1, 2), keepdims=True)
    illuminant = ops.maximum(ops.power(means, 1.0 / power), EPSILON)
    return illuminant / ops.sqrt(ops.sum(ops.square(illuminant), axis=-1, keepdims=True))


@keras.saving.register_keras_serializable(package="dermnet")
class ShadesOfGray(keras.layers.Layer):
    """RGB 0-255 [B, H, W, 3] -> the same image under a neutral (grey) illuminant, 0-255.

    Each channel is multiplied by 1 / (sqrt(3) e_c), e the unit illuminant vector: an image
    that is already grey-balanced (e = (1, 1, 1) / sqrt(3)) is left unchanged."""

    def __init__(self, power: float = 6.0, **kwargs):
        super().__init__(**kwargs)
        if power < 1:
            raise ValueError(f"power must be at least 1, got {power}")
        self.power = float(power)

    def call(self, images):
        gains = 1.0 / (compute_illuminant(images, self.power) * 3.0 ** 0.5)
        balanced = ops.clip(ops.cast(images, "float32") * gains, 0.0, 255.0)
        return ops.cast(balanced, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"power": self.power}
