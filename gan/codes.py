"""What the progressive InfoGAN's networks consume: random code batches and square images.

    make_code_batch       noise N(0, 1), a one-hot lesion class, continuous codes U(-1, 1)
    square_crop_or_pad    a 450x600 (HxW) HAM10000 image -> 450x450 (crop) or 600x600 (pad)
    prepare_real_images   uint8 images -> square, area-resized, float32 in [-1, 1]

The square rule. HAM10000 dermoscopy images are 600 wide by 450 high with the lesion near
the centre (the curators cropped each image around its lesion), so the default "crop" keeps
the centre square, the full height and columns 75..524; the 150 columns lost are skin around
the lesion. "pad" keeps every pixel and mirrors the image into the missing rows
(``numpy.pad`` "reflect": the edge row is not repeated), which avoids flat bars the critic
could learn to spot. An odd difference puts the extra pixel after (right or below).

Everything here is numpy and OpenCV: no Keras, so data code can use it anywhere. The
networks re-export these names from ``gan.networks``.
"""

from __future__ import annotations

import cv2
import numpy as np

SQUARE_MODES = ("crop", "pad")


def _as_generator(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def make_one_hot(classes, num_classes: int) -> np.ndarray:
    """Class indices [B] -> float32 one-hot rows [B, num_classes]; ValueError if out of range."""
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes}), got {classes}")
    return np.eye(num_classes, dtype=np.float32)[classes]


def make_code_batch(rng_or_seed,            # numpy Generator (advanced) or a seed
                    batch: int,             # rows to draw
                    config,                 # a gan.networks.NetworkConfig
                    classes=None,           # None: uniform classes; else B indices or one
                    clinical=None) -> dict:  # optional [B, clinical_codes] rows to pass on
    """The generator's code inputs for ``batch`` samples, float32 numpy arrays.

    Returns ``noise`` [B, latent_size] ~ N(0, 1), ``categorical`` [B, num_classes] one-hot,
    ``continuous`` [B, continuous_codes] ~ U(-1, 1), drawn in that order. ``clinical`` is
    included only when given: a plausible age, sex and site come from the real metadata,
    which the caller holds. The fade weight ``alpha`` belongs to the schedule, not here.
    """
    rng = _as_generator(rng_or_seed)
    noise = rng.standard_normal((batch, config.latent_size), dtype=np.float32)
    if classes is None:
        classes = rng.integers(0, config.num_classes, size=batch)
    classes = np.broadcast_to(np.asarray(classes), (batch,))
    codes = {"noise": noise, "categorical": make_one_hot(classes, config.num_classes),
             "continuous": rng.uniform(-1.0, 1.0, (batch, config.continuous_codes))
                              .astype(np.float32)}
    if clinical is not None:
        clinical = np.asarray(clinical, dtype=np.float32)
        if clinical.shape != (batch, config.clinical_codes):
            raise ValueError(f"clinical must have shape {(batch, config.clinical_codes)}, "
                             f"got {clinical.shape}")
        codes["clinical"] = clinical
    return codes


def square_crop_or_pad(image: np.ndarray, mode: str = "crop") -> np.ndarray:
    """[H, W, ...] -> a square: the centred short-side square ("crop") or the long side
    with mirrored borders ("pad"); see the module docstring for why."""
    if mode not in SQUARE_MODES:
        raise ValueError(f"mode must be one of {SQUARE_MODES}, got {mode!r}")
    height, width = image.shape[:2]
    if mode == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return image[top:top + side, left:left + side]
    side = max(height, width)
    rows, columns = side - height, side - width
    padding = [(rows // 2, rows - rows // 2), (columns // 2, columns - columns // 2)]
    return np.pad(image, padding + [(0, 0)] * (image.ndim - 2), mode="reflect")


def _resize_square(image: np.ndarray, resolution: int) -> np.ndarray:
    shrinking = image.shape[0] >= resolution
    return cv2.resize(np.ascontiguousarray(image), (resolution, resolution),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def prepare_real_images(images_uint8: np.ndarray,  # [N, H, W, 3] or [H, W, 3], 0..255
                        resolution: int,           # side of the output squares
                        mode: str = "crop") -> np.ndarray:  # square rule, as above
    """uint8 images -> float32 [N, R, R, 3] (or [R, R, 3]) in [-1, 1].

    Squares each image, then resizes it: OpenCV's area interpolation when shrinking (a box
    average, like the 2x2 averages Karras et al. used to build lower resolutions), bilinear
    in the rare enlargement (a 450 crop at 512), where area interpolation is blocky.
    """
    images = np.asarray(images_uint8)
    single = images.ndim == 3
    batch = images[None] if single else images
    resized = np.stack([_resize_square(square_crop_or_pad(image, mode), resolution)
                        for image in batch])  # [N, R, R, 3] uint8
    scaled = resized.astype(np.float32) / 127.5 - 1.0
    return scaled[0] if single else scaled
