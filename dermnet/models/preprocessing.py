"""Pixel preprocessing as a layer inside the model, so a saved model takes raw RGB 0-255.

Each backbone family was trained on ImageNet with its own input convention:

    caffe  RGB -> BGR, minus the ImageNet channel means (VGG, Keras ResNet50/101)
    torch  / 255, minus mean, divided by std per channel (torchvision / timm ports)
    tf     / 127.5 - 1 (MobileNet)
    none   cast only (EfficientNet rescales and normalises inside its own graph)
"""

from __future__ import annotations

import keras
from keras import ops

# Per-mode (scale, offset, std, reverse_channels): out = (x * scale - offset) / std, then
# RGB -> BGR if reverse_channels; offsets and stds are per output channel.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
MODES = {
    "caffe": (1.0, _CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), True),
    "torch": (1.0 / 255.0, _IMAGENET_MEAN, _IMAGENET_STD, False),
    "tf": (1.0 / 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), False),
    "none": (1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),
}


@keras.saving.register_keras_serializable(package="dermnet")
class PixelPreprocessing(keras.layers.Layer):
    """Maps raw RGB pixels (0-255, any dtype) to a backbone's expected input."""

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; valid: {sorted(MODES)}")
        self.mode = mode

    def call(self, images):
        scale, offset, std, reverse = MODES[self.mode]
        images = ops.cast(images, self.compute_dtype)
        if reverse:
            images = ops.flip(images, axis=-1)  # RGB -> BGR before subtracting BGR means
        offset = ops.convert_to_tensor(offset, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(std, dtype=self.compute_dtype)
        return (images * scale - offset) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"mode": self.mode}
