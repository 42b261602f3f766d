"""The spatial transformer of study 2 (Jaderberg et al. 2015): a layer that learns where to look.

This module owns the ``SpatialTransformer`` layer and the differentiable geometry behind it:
the affine parameterisation (``compute_affine_theta``), the sampling grid
(``compute_sampling_grid``) and the bilinear sampler (``bilinear_sample``), all written with
``keras.ops`` so gradients reach the transform under every backend (TensorFlow's
projective-transform op, behind ``keras.ops.image.affine_transform``, passes none).

Conventions (PyTorch ``affine_grid`` / ``grid_sample`` with ``align_corners=False``):

- ``theta`` [B, 2, 3] maps *output* coordinates to *input* coordinates (an inverse warp):
  ``(x_in, y_in) = theta @ (x_out, y_out, 1)`` in normalised coordinates where -1 and +1 are
  the outer edges of the image (not the centres of its corner pixels). So ``translate_x =
  +0.5`` samples a quarter of the image width further right: the content moves left.
- Pixel ``j`` of a side of ``n`` pixels has its centre at normalised ``(2 j + 1) / n - 1``.
  The grid is computed in pixel units centred on the image, so the identity transform lands
  exactly on pixel centres and reproduces its input bit for bit.
- Samples outside the image read zeros (``padding="zeros"``) or the nearest edge pixel
  (``padding="border"``). Inside a dermnet model the transformer runs after the pixel
  preprocessing, so a zero is the ImageNet mean colour, not black.
"""

from __future__ import annotations

import keras
from keras import ops

SCALE_TRANSLATION = ("scale_x", "scale_y", "translate_x", "translate_y")
WITH_SHEAR = (*SCALE_TRANSLATION, "shear_x", "shear_y")
PADDINGS = ("zeros", "border")


def compute_affine_theta(parameters, allow_shear: bool):
    """The affine matrices [B, 2, 3] for raw head outputs [B, 4] (or [B, 6] with shear).

    ``scale = 1 + tanh(p)``, ``translate = tanh(p)``, ``shear = tanh(p)``: all-zero
    parameters are exactly the identity, scales stay in (0, 2) (zoom in up to any factor, out
    up to 2x), translations within half the image. Without shear the off-diagonal entries are
    constant zeros, so no training step can introduce shear.
    """
    parameters = ops.cast(parameters, "float32")
    squashed = ops.tanh(parameters)
    scale_x, scale_y = 1.0 + squashed[:, 0], 1.0 + squashed[:, 1]  # [B] each
    translate_x, translate_y = squashed[:, 2], squashed[:, 3]
    if allow_shear:
        shear_x, shear_y = squashed[:, 4], squashed[:, 5]
    else:
        shear_x = shear_y = ops.zeros_like(scale_x)
    rows = [scale_x, shear_x, translate_x, shear_y, scale_y, translate_y]
    return ops.reshape(ops.stack(rows, axis=-1), (-1, 2, 3))


def compute_sampling_grid(theta, input_size, output_size):
    """Input pixel coordinates (x, y), each [B, H_out, W_out], that ``theta`` samples.

    Worked in pixel units centred on the image rather than in [-1, 1], so that with
    ``theta`` = identity and equal sizes every term is an exact half-integer and the grid
    hits the input pixel centres exactly (no 1e-7 drift, no bleeding into neighbours).
    """
    height, width = (float(side) for side in input_size)
    out_height, out_width = (int(side) for side in output_size)
    half_height, half_width = height / 2.0, width / 2.0
    # Output pixel centres, measured in input pixels from the image centre.
    columns = (ops.arange(out_width, dtype="float32") + 0.5) * (width / out_width) - half_width
    rows = (ops.arange(out_height, dtype="float32") + 0.5) * (height / out_height) - half_height
    columns = ops.reshape(columns, (1, 1, out_width))  # [1, 1, W_out]
    rows = ops.reshape(rows, (1, out_height, 1))  # [1, H_out, 1]
    theta = ops.reshape(ops.cast(theta, "float32"), (-1, 6, 1, 1))  # entries broadcast [B,1,1]
    # x_in = half_width * (x_normalised + 1) - 0.5, expanded term by term.
    x = (theta[:, 0] * columns + theta[:, 1] * (rows * (half_width / half_height))
         + theta[:, 2] * half_width + (half_width - 0.5))
    y = (theta[:, 3] * (columns * (half_height / half_width)) + theta[:, 4] * rows
         + theta[:, 5] * half_height + (half_height - 0.5))
    return x, y


def gather_pixels(images, rows, columns):
    """``images[b, rows, columns]`` for integer-valued float coordinates [B, H', W'];
    positions outside the image read zero. Returns [B, H', W', C]."""
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    inside = (rows >= 0) & (rows <= height - 1) & (columns >= 0) & (columns <= width - 1)
    rows = ops.cast(ops.clip(rows, 0, height - 1), "int32")
    columns = ops.cast(ops.clip(columns, 0, width - 1), "int32")
    batch = ops.shape(images)[0]
    first = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))
    flat = ops.reshape(images, (-1, channels))  # [B * H * W, C]
    values = ops.take(flat, first + rows * width + columns, axis=0)  # [B, H', W', C]
    return values * ops.cast(inside, values.dtype)[..., None]


def bilinear_sample(images, x, y, padding: str = "zeros"):
    """Bilinear interpolation of ``images`` [B, H, W, C] at pixel coordinates ``x``, ``y``
    [B, H', W'] (pixel ``(i, j)`` has its centre at ``x = j, y = i``). Differentiable with
    respect to ``x`` and ``y`` (and the images). Returns [B, H', W', C] in float32."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    images = ops.cast(images, "float32")
    if padding == "border":
        x = ops.clip(x, 0.0, images.shape[2] - 1.0)
        y = ops.clip(y, 0.0, images.shape[1] - 1.0)
    left, top = ops.floor(x), ops.floor(y)
    right_weight, bottom_weight = x - left, y - top  # the gradient to x and y flows here
    corners = ((top, left, (1.0 - bottom_weight) * (1.0 - right_weight)),
               (top, left + 1.0, (1.0 - bottom_weight) * right_weight),
               (top + 1.0, left, bottom_weight * (1.0 - right_weight)),
               (top + 1.0, left + 1.0, bottom_weight * right_weight))
    return sum(weight[..., None] * gather_pixels(images, rows, columns)
               for rows, columns, weight in corners)


def transform_images(images, theta, output_size=None, padding: str = "zeros"):
    """Warp ``images`` [B, H, W, C] by ``theta`` [B, 2, 3]; returns [B, H_out, W_out, C]."""
    input_size = (images.shape[1], images.shape[2])
    x, y = compute_sampling_grid(theta, input_size, output_size or input_size)
    return bilinear_sample(images, x, y, padding)


@keras.saving.register_keras_serializable(package="dermnet")
class SpatialTransformer(keras.layers.Layer):
    """Localization network -> affine theta -> grid -> bilinear sampler.

    The localization network follows the original code of study 2: the image resized to
    ``localization_size``, two (Conv 3x3 ReLU -> MaxPool) stages, Dense + ReLU, then a
    head whose zero kernel and zero bias make the initial transform the identity
    (see ``compute_affine_theta``). ``theta`` for inspection: ``compute_theta(images)``.
    """

    def __init__(self, localization_size=(150, 150),  # the original STN saw a 150x150 copy
                 filters: int = 32,                   # channels of both localization convs
                 units: int = 64,                     # width of the localization Dense
                 pool_size: int = 5,                  # original: 5x5 max pools, stride 5
                 allow_shear: bool = False,           # False: scale and translation only
                 output_size=None,                    # (H, W) sampled; None = input size
                 padding: str = "zeros",              # outside the image: zeros | border
                 **kwargs):
        super().__init__(**kwargs)
        self.localization_size = tuple(int(side) for side in localization_size)
        self.filters, self.units, self.pool_size = int(filters), int(units), int(pool_size)
        self.allow_shear = bool(allow_shear)
        self.output_size = None if output_size is None else tuple(int(s) for s in output_size)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding
        if min(self.localization_size) // self.pool_size // self.pool_size < 1:
            raise ValueError(f"localization_size {self.localization_size} is too small for two "
                             f"{self.pool_size}x{self.pool_size} max pools")
        self.parameter_names = WITH_SHEAR if self.allow_shear else SCALE_TRANSLATION
        self.localization = self._make_localization()
        self.head = keras.layers.Dense(len(self.parameter_names), kernel_initializer="zeros",
                                       bias_initializer="zeros", dtype=self.dtype_policy,
                                       name="localization_head")

    def _make_localization(self) -> keras.Sequential:
        layers = []
        for index in (1, 2):
            layers += [keras.layers.Conv2D(self.filters, 3, padding="same", activation="relu",
                                           dtype=self.dtype_policy,
                                           name=f"localization_conv_{index}"),
                       keras.layers.MaxPooling2D(self.pool_size, dtype=self.dtype_policy,
                                                 name=f"localization_pool_{index}")]
        layers += [keras.layers.Flatten(dtype=self.dtype_policy, name="localization_flatten"),
                   keras.layers.Dense(self.units, activation="relu", dtype=self.dtype_policy,
                                      name="localization_dense")]
        return keras.Sequential(layers, name="localization")

    def build(self, input_shape):
        self.localization.build((None, *self.localization_size, input_shape[-1]))
        self.head.build((None, self.units))

    def compute_theta(self, inputs):
        """The affine matrices [B, 2, 3] this layer applies to ``inputs`` [B, H, W, C]."""
        images = ops.cast(inputs, self.compute_dtype)
        if tuple(images.shape[1:3]) != self.localization_size:
            images = ops.image.resize(images, self.localization_size)
        return compute_affine_theta(self.head(self.localization(images)), self.allow_shear)

    def call(self, inputs):
        warped = transform_images(inputs, self.compute_theta(inputs), self.output_size,
                                  self.padding)
        return ops.cast(warped, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        height, width = self.output_size or tuple(input_shape[1:3])
        return (input_shape[0], height, width, input_shape[-1])

    def get_config(self):
        return super().get_config() | {
            "localization_size": list(self.localization_size), "filters": self.filters,
            "units": self.units, "pool_size": self.pool_size, "allow_shear": self.allow_shear,
            "output_size": None if self.output_size is None else list(self.output_size),
            "padding": self.padding}
