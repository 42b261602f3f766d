"""Real images for the GAN: a HAM10000 folder -> square uint8 images -> per-stage batches.

``load_gan_data(config)`` reads the dataset (``dermnet.data.ham10000``; the SYNTHETIC phantom
dataset, generated once into the cache, when ``data.data_dir`` is empty), keeps its rows
(``GanData.frame``: age, sex, site, ... of every image), squares every
image (``gan.networks.square_crop_or_pad``) and decodes it once to uint8 at the final
resolution, in memory or in a memory-mapped ``.npy`` cache. ``GanData.images_at(R)`` gives
the set at a stage's resolution R by repeated 2x2 box averaging, rounded to uint8 at each
level, as Karras et al.'s dataset tool stores its levels of detail.

``build_stage_dataset`` makes a stage's batches, float32 [B, R, R, 3] in [-1, 1], randomly
flipped. The stream of images is a pure function of (seed, images seen): position p of the
stream is image ``permutation(seed, p // N)[p % N]``, and the batch starting at p flips with
the seed pair (seed, p). A run resumed at any image count sees exactly the batches an
uninterrupted run would. The batches are made in numpy (``gan.networks.prepare_real_images``
scales them) inside a tf.data pipeline, which feeds ``fit`` and ``tf.distribute``.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from dermnet.data.ham10000 import load_ham10000
from dermnet.data.pipeline import decode_jpeg, resize_image
from dermnet.runs.ham10000 import resolve_data_dir
from gan.networks import prepare_real_images, square_crop_or_pad

DECODE_BATCH = 64  # images decoded per tf.data batch while filling the cache


class GanData:
    """The training images, square uint8 at the final resolution, with their labels and
    metadata rows."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, data_dir: Path,
                 synthetic: bool, frame: pd.DataFrame | None = None):
        self.images = images          # uint8 [N, R, R, 3], R = the final resolution
        self.labels = labels          # int32 [N] class index (dermnet's CLASSES order)
        # ``load_ham10000``'s rows, aligned with the images: image_id, dx, age, sex,
        # localization, label, ... (the clinical codes are encoded from them).
        self.frame = frame
        self.data_dir = data_dir
        self.synthetic = synthetic    # True for the phantom dataset
        self._levels = {images.shape[1]: images}

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> str:
        label = "SYNTHETIC phantom data" if self.synthetic else "REAL images"
        side = self.images.shape[1]
        return f"{label} {self.data_dir}: {len(self)} images, squared to {side}x{side}"

    def images_at(self, resolution: int) -> np.ndarray:
        """uint8 [N, resolution, resolution, 3]: halved by 2x2 box means down to it."""
        if resolution not in self._levels:
            final = self.images.shape[1]
            if not 1 <= resolution < final or final % resolution:
                raise ValueError(f"no images at {resolution}x{resolution}: the cache holds "
                                 f"{final}x{final} (halved to powers of two below it)")
            self._levels[resolution] = halve_images(self.images_at(resolution * 2))
        return self._levels[resolution]


def halve_images(images: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """uint8 [N, 2R, 2R, 3] -> uint8 [N, R, R, 3]: each pixel the rounded mean of a 2x2 box."""
    count, side = len(images), images.shape[1] // 2
    halves = np.empty((count, side, side, images.shape[3]), np.uint8)
    for start in range(0, count, chunk):  # bounded float32 scratch for large sets
        block = images[start:start + chunk].astype(np.float32)  # [n, 2R, 2R, 3]
        mean = (block[:, 0::2, 0::2] + block[:, 0::2, 1::2]
                + block[:, 1::2, 0::2] + block[:, 1::2, 1::2]) * 0.25  # [n, R, R, 3]
        halves[start:start + chunk] = np.clip(np.rint(mean), 0, 255)
    return halves


def load_gan_data(config, log=print) -> GanData:
    """The run's images (``config`` is a ``GanConfig``), decoded or read from the cache."""
    data_dir = resolve_data_dir(config, log)  # reads data.data_dir and data.phantom_images
    dataset = load_ham10000(data_dir, check_images="header")
    frame = dataset.frame
    paths = frame["path"].tolist()
    resolution = config.network.final_resolution
    images = _cached_images(paths, resolution, config.data, log)
    synthetic = bool("dataset" in frame and (frame["dataset"] == "phantom").all())
    return GanData(images, frame["label"].to_numpy(np.int32), data_dir, synthetic, frame)


def _cached_images(paths: list[str], resolution: int, data, log) -> np.ndarray:
    if data.cache == "memory":
        return decode_images(paths, resolution, data.square)
    key = hashlib.sha1(repr((paths, resolution, data.square)).encode()).hexdigest()[:12]
    path = Path(data.cache) / f"gan-images-{resolution}-{data.square}-{key}.npy"
    if not path.exists():
        log(f"decoding {len(paths)} images into {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial.npy")
        np.save(partial, decode_images(paths, resolution, data.square))
        partial.replace(path)  # complete or absent, whatever instant a kill comes at
    return np.load(path, mmap_mode="r")


def decode_images(paths: list[str], resolution: int, square: str) -> np.ndarray:
    """uint8 [N, resolution, resolution, 3], in the order of ``paths``."""
    files = tf.data.Dataset.from_tensor_slices(paths)
    images = files.map(lambda path: decode_square(tf.io.read_file(path), resolution, square),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = [batch.numpy() for batch in images.batch(DECODE_BATCH)]
    return np.concatenate(batches)


def decode_square(contents, resolution: int, square: str):
    """Encoded image bytes -> uint8 [resolution, resolution, 3]: squared, then resized
    (area when shrinking, see ``dermnet.data.pipeline.resize_image``)."""
    contents = tf.convert_to_tensor(contents, tf.string)
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff")
    image = tf.cond(  # JPEGs decode at the smallest DCT scale that still covers the square
        is_jpeg,
        lambda: decode_jpeg(contents, (resolution, resolution)),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False))
    squared = tf.numpy_function(lambda pixels: square_crop_or_pad(pixels, square), [image],
                                tf.uint8, stateful=False)
    return resize_image(tf.ensure_shape(squared, [None, None, 3]), (resolution, resolution))


# --- the stream of training batches -------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, count: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(count)


def compute_stream_indices(seed: int, count: int, start: int, size: int) -> np.ndarray:
    """int64 [size]: the images at positions start..start+size-1 of the endless stream that
    walks through a fresh permutation of the ``count`` images every epoch."""
    positions = np.arange(start, start + size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, count)
    indices = np.empty(size, np.int64)
    for epoch in np.unique(epochs):
        chosen = epochs == epoch
        indices[chosen] = _permutation(seed, count, int(epoch))[offsets[chosen]]
    return indices


def build_stage_dataset(images: np.ndarray,  # uint8 [N, R, R, 3] at the stage's resolution
                        seed: int,
                        first_image: int,    # images seen before the first batch
                        steps: int,          # batches to make
                        batch_size: int,     # global batch size
                        flips: bool = True,
                        labels: np.ndarray | None = None,  # int [N] classes, or None
                        num_classes: int = 7) -> tf.data.Dataset:
    """``steps`` batches of float32 [batch_size, R, R, 3] in [-1, 1] (see the module doc);
    with ``labels``, (images, float32 one-hot labels [batch_size, num_classes]) pairs."""
    starts = first_image + batch_size * np.arange(steps, dtype=np.int64)  # [steps]
    resolution = images.shape[1]

    def make_batch(start):
        rows = compute_stream_indices(seed, len(images), int(start), batch_size)
        batch = images[np.sort(rows)][np.argsort(np.argsort(rows))]  # sorted reads for mmap
        if flips:
            batch = flip_images(batch, np.random.default_rng([seed, int(start)]))
        pixels = prepare_real_images(batch, resolution)
        if labels is None:
            return pixels
        return pixels, np.eye(num_classes, dtype=np.float32)[labels[rows]]

    def load(start):
        if labels is None:
            batch = tf.numpy_function(make_batch, [start], tf.float32, stateful=False)
            return tf.ensure_shape(batch, (batch_size, resolution, resolution, 3))
        batch, one_hot = tf.numpy_function(make_batch, [start], (tf.float32, tf.float32),
                                           stateful=False)
        return (tf.ensure_shape(batch, (batch_size, resolution, resolution, 3)),
                tf.ensure_shape(one_hot, (batch_size, num_classes)))

    return tf.data.Dataset.from_tensor_slices(starts).map(load).prefetch(2)


def flip_images(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image of [B, R, R, 3] flipped left-right, then up-down, each with probability
    1/2 (dermoscopy has no up or left)."""
    draws = rng.random((len(images), 2)) < 0.5  # [B, 2]
    images = np.where(draws[:, 0, None, None, None], images[:, :, ::-1], images)
    return np.where(draws[:, 1, None, None, None], images[:, ::-1], images)
