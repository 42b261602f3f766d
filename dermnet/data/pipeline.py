"""The tf.data input pipeline: image files + labels (+ clinical vectors) -> model batches.

Owns image decoding (`decode_image`, `load_image`), the dataset builders (`build_dataset`,
and `build_epoch_dataset` for resumable training runs, both configured by `PipelineConfig`)
and class weighting (`compute_class_weights`, `compute_sample_weights`). It takes plain
arrays (paths, integer labels, float clinical rows), not the HAM10000 reader, so any split
or dataset can feed it. TensorFlow-specific.

Stages of `build_dataset`, and why in this order:
    read + decode (+ crop to the image's box)   parallel; JPEGs decode at reduced DCT scale;
      + resize to uint8 [H, W, 3]               optional lesion boxes (see `crop_to_box`)
    cache (memory or file)                      uint8, before anything random: later epochs
                                                skip decoding; float32 would be 4x larger
    zip with labels / clinical rows             not cached, so a cache never holds stale labels
    shuffle (training)                          full-dataset buffer by default: the entries are
                                                references to cached tensors, not copies
    batch
    augment (training, if configured)           whole batches, seeded per batch, see augment.py
    prefetch
Evaluation pipelines (training=False) never shuffle or augment and always keep row order, so
predictions line up with the input rows.

Batches are `({"image": uint8 [B, H, W, 3], "clinical": float32 [B, F]}, label)`, "clinical"
only when clinical rows are given; label is int32 [B], or float32 one-hot [B, K] when
`one_hot`; multi-task targets (a float32 [N, T] matrix of -1, 0, 1) pass through as float32
[B, T]. Pixels stay uint8 0-255: the models do their own preprocessing.
"""

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from dermnet.data.augment import augment_batch
from dermnet.data.augment_config import AugmentConfig
from dermnet.data.vocabulary import CLASSES

# libjpeg can decode straight to 1/2, 1/4 or 1/8 scale, far faster than full decode + resize.
JPEG_RATIOS = (8, 4, 2, 1)
# Epoch e of seed s shuffles and augments from s * EPOCH_SEED_STRIDE + e: distinct for any
# seed below 2**43 and any epoch below the stride.
EPOCH_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class PipelineConfig:
    """How `build_dataset` reads, caches, shuffles, batches and augments."""

    image_size: tuple[int, int] = (224, 300)  # (H, W); the paper's low resolution
    resize: str = "stretch"  # another aspect ratio: "stretch" or "crop" (see resize_image)
    batch_size: int = 32
    cache: str = "memory"  # "memory", "none", or a file path prefix for an on-disk cache
    shuffle_buffer: int | None = None  # None: the whole dataset (a full shuffle)
    augment: AugmentConfig | None = None  # training-time augmentation; None: none
    # Same seed, same batches: parallel stages deliver in order. On 2 cores False was no faster
    # within noise; it lets a slow element be overtaken.
    deterministic: bool = True
    seed: int = 0  # seeds the shuffle and the augmentation
    num_parallel_calls: int | None = None  # parallel decode / augment calls; None: AUTOTUNE
    # tf.data's autotuner. Off, AUTOTUNE means one call per core. On 2 cores it left whole
    # epochs on one core at random (half the speed), and first epochs ran 1.5x slower.
    autotune: bool = False
    drop_remainder: bool = False  # drop a last, smaller batch (fixed-shape steps)
    one_hot: bool = False  # labels as float32 one-hot vectors instead of int32 indices
    num_classes: int = len(CLASSES)


# --- decoding ------------------------------------------------------------------------------


def load_image(path, image_size, resize: str = "stretch", box=None):
    """Read one image file and decode it to uint8 [H, W, 3] of `image_size` (H, W)."""
    return decode_image(tf.io.read_file(path), image_size, resize, box)


def decode_image(contents, image_size, resize: str = "stretch", box=None):
    """Decode encoded image bytes (JPEG, PNG, BMP or GIF, told apart by their content, not a
    file name) to uint8 [H, W, 3] of exactly `image_size` (H, W); `resize` as in
    `resize_image`. A `box` (float32 [4]: x0, y0, x1, y1 as fractions, see `crop_to_box`)
    first cuts the image to that window: a lesion-centred crop."""
    contents = tf.convert_to_tensor(contents, tf.string)
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff")
    # The box's share of the image: a JPEG decodes at a DCT scale at which the crop, not
    # only the whole image, still covers image_size.
    extent = None if box is None else _box_extent(box)
    image = tf.cond(
        is_jpeg,
        lambda: decode_jpeg(contents, image_size, extent),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    if box is not None:
        image = crop_to_box(image, box)
    if resize == "crop":
        image = crop_to_aspect(image, image_size)
    elif resize != "stretch":
        raise ValueError(f"resize must be 'stretch' or 'crop', got {resize!r}")
    return resize_image(image, image_size)


def crop_to_aspect(image, image_size):
    """The largest centred window of uint8 [h, w, 3] with the aspect ratio of `image_size`
    (H, W): a square photo meets a 4:3 input without squashing the lesion. Odd margins put
    the extra pixel at the bottom / right."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    aspect = image_size[1] / image_size[0]  # W / H of the target
    new_height = tf.minimum(height, tf.round(width / aspect))
    new_width = tf.minimum(width, tf.round(height * aspect))
    top = tf.cast((height - new_height) // 2, tf.int32)
    left = tf.cast((width - new_width) // 2, tf.int32)
    return image[top:top + tf.cast(new_height, tf.int32), left:left + tf.cast(new_width, tf.int32)]


def decode_jpeg(contents, image_size, extent=None):
    """Decode a JPEG at the smallest DCT scale (1/8, 1/4, 1/2 or 1) that still covers
    `image_size` in both dimensions: 600x450 -> 224x300 decodes at 1/2, to 300x225. With
    `extent` (float64 [2]: the height and width shares of a crop to come), the crop must
    cover it: the scaled size times the extent."""
    height, width = image_size
    shape = tf.io.extract_jpeg_shape(contents)  # [H, W, C] from the header only
    extent = tf.ones([2], tf.float64) if extent is None else extent

    def covers(ratio):
        # libjpeg's scaled size is ceil(size / ratio).
        scaled = tf.cast(-(-shape[:2] // ratio), tf.float64) * extent
        return (scaled[0] >= height) & (scaled[1] >= width)

    # Ratio 1 is the fallback: an image smaller than the target decodes in full and is then
    # enlarged.
    fits = [covers(ratio) for ratio in JPEG_RATIOS[:-1]] + [tf.constant(True)]
    first_fit = tf.argmax(tf.cast(tf.stack(fits), tf.int32), output_type=tf.int32)

    def decoder(ratio):
        # INTEGER_ACCURATE matches OpenCV exactly; the default DCT differs by up to 9 levels.
        return lambda: tf.io.decode_jpeg(
            contents, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"
        )

    return tf.switch_case(first_fit, [decoder(ratio) for ratio in JPEG_RATIOS])


def crop_to_box(image, box):
    """The window of uint8 [h, w, 3] inside `box` (x0, y0, x1, y1, fractions of w and h, x1
    and y1 exclusive). Pixel edges are floor(fraction x size + 0.5), computed in float64 from
    the float32 box, at least one pixel and inside the image: exactly the window of
    `dermnet.data.lesion_box.box_to_pixels`, whatever size the image decoded at."""
    shape = tf.shape(image)
    box = tf.cast(tf.cast(box, tf.float32), tf.float64)
    top, bottom = _box_edges(box[1], box[3], shape[0])
    left, right = _box_edges(box[0], box[2], shape[1])
    return image[top:bottom, left:right]


def _box_edges(start, stop, size):
    """(first, last) pixel edges of [start, stop) on an axis of `size` pixels (int32)."""
    def edge(fraction):
        return tf.cast(tf.floor(fraction * tf.cast(size, tf.float64) + 0.5), tf.int32)

    first = tf.clip_by_value(edge(start), 0, size - 1)
    return first, tf.clip_by_value(tf.maximum(edge(stop), first + 1), first + 1, size)


def _box_extent(box):
    """float64 [2]: the (height, width) shares of the image inside a box."""
    box = tf.cast(tf.cast(box, tf.float32), tf.float64)
    return tf.stack([box[3] - box[1], box[2] - box[0]])


def resize_image(image, image_size):
    """Resize uint8 [h, w, 3] to uint8 [H, W, 3]: untouched when the size already matches,
    area averaging when shrinking (as cv2.INTER_AREA), antialiased bilinear otherwise."""
    size = tf.constant(image_size, tf.int32)
    current = tf.shape(image)[:2]

    def resized(method):
        def resize():
            pixels = tf.image.resize(image, size, method=method, antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)

        return resize

    image = tf.cond(
        tf.reduce_all(current == size),
        lambda: image,
        lambda: tf.cond(
            tf.reduce_all(current >= size), resized("area"), resized("bilinear")
        ),
    )
    return tf.ensure_shape(image, [*image_size, 3])


# --- the dataset ---------------------------------------------------------------------------


def build_dataset(paths, labels, clinical=None, *, config: PipelineConfig, training: bool,
                  boxes=None):
    """A tf.data.Dataset of model batches (see the module docstring) from image file paths,
    integer class labels [N] and optional clinical rows [N, F]. `training` turns on the
    shuffle and, when `config.augment` is set, the augmentation; each new iteration (epoch)
    reshuffles and redraws them, reproducibly from `config.seed`. `boxes` (float [N, 4]:
    x0, y0, x1, y1 as fractions of each image, e.g. lesion boxes) crops each image to its
    box before the resize; None: whole images."""
    examples = _make_examples(paths, labels, clinical, config, boxes)
    if training:
        buffer = config.shuffle_buffer or len(paths)
        examples = examples.shuffle(buffer, seed=config.seed, reshuffle_each_iteration=True)
    batches = examples.batch(config.batch_size, drop_remainder=config.drop_remainder)
    # Dataset.random re-randomises per iteration from a fixed seed: new pairs every epoch.
    seeds = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True).batch(2)
    return _finish(_to_model_batches(batches, seeds, config, training), config, training)


def build_epoch_dataset(paths, labels, clinical=None, *, config: PipelineConfig,
                        first_epoch: int, last_epoch: int, boxes=None):
    """Training batches of epochs first_epoch..last_epoch-1 back to back, in one dataset (for
    `model.fit(..., initial_epoch=first_epoch, steps_per_epoch=ceil(N / batch_size))`).
    Epoch e's shuffle and augmentation derive from (config.seed, e) alone, so a run resumed
    at epoch e sees exactly the batches an uninterrupted run would. `boxes` as in
    `build_dataset`."""
    examples = _make_examples(paths, labels, clinical, config, boxes)
    buffer = config.shuffle_buffer or len(paths)

    def one_epoch(epoch: int):
        epoch_seed = config.seed * EPOCH_SEED_STRIDE + epoch
        shuffled = examples.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        batches = shuffled.batch(config.batch_size, drop_remainder=config.drop_remainder)
        # Batch b of the epoch augments with the seed pair (epoch seed, b).
        seeds = tf.data.Dataset.counter().map(
            lambda index: tf.stack([tf.constant(epoch_seed, tf.int64), index]))
        return _to_model_batches(batches, seeds, config, training=True)

    # Epochs are chained in Python, not with Dataset.range(...).flat_map: a shuffle seed
    # must be a Python int, since a tensor seed fails once a global seed is set
    # (keras.utils.set_random_seed). All epochs read the one shared cache.
    epochs = functools.reduce(tf.data.Dataset.concatenate,
                              [one_epoch(epoch) for epoch in range(first_epoch, last_epoch)])
    return _finish(epochs, config, training=True)


def _make_examples(paths, labels, clinical, config: PipelineConfig, boxes=None):
    """Unbatched (uint8 image [H, W, 3], label[, clinical row]) in row order, decoded (and
    cropped to their boxes) in parallel and cached after decoding: a box belongs to its
    image, so it is applied before the cache; labels and clinical rows join after it."""
    paths, labels, clinical = _check_inputs(paths, labels, clinical, config.num_classes)
    boxes = None if boxes is None else _check_boxes(boxes, len(paths))
    if boxes is None:
        images = tf.data.Dataset.from_tensor_slices(paths).map(
            lambda path: load_image(path, config.image_size, config.resize),
            num_parallel_calls=_parallel_calls(config))
    else:
        images = tf.data.Dataset.from_tensor_slices((paths, boxes)).map(
            lambda path, box: load_image(path, config.image_size, config.resize, box),
            num_parallel_calls=_parallel_calls(config))
    images = _cache(images, config.cache, paths, config.image_size, config.resize, boxes)
    targets = [labels] if clinical is None else [labels, clinical]
    return tf.data.Dataset.zip(images, *map(tf.data.Dataset.from_tensor_slices, targets))


def _to_model_batches(batches, seeds, config: PipelineConfig, training: bool):
    """Batches as model inputs; training batches augmented, each with its seed pair [2]."""
    augment = config.augment if training else None
    if augment is None or augment.is_identity:
        return batches.map(lambda *batch: _to_model_inputs(*batch, config=config))

    def augment_inputs(batch, seed):
        images, *targets = batch
        return _to_model_inputs(augment_batch(images, seed, augment), *targets, config=config)

    return tf.data.Dataset.zip(batches, seeds).map(
        augment_inputs, num_parallel_calls=_parallel_calls(config)
    )


def _finish(dataset, config: PipelineConfig, training: bool):
    options = tf.data.Options()
    # Evaluation keeps row order whatever the config says: predictions must align with rows.
    options.deterministic = config.deterministic or not training
    options.autotune.enabled = config.autotune
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _parallel_calls(config: PipelineConfig) -> int:
    return tf.data.AUTOTUNE if config.num_parallel_calls is None else config.num_parallel_calls


def _to_model_inputs(images, labels, clinical=None, *, config: PipelineConfig):
    """A batch as ({"image", ["clinical"]}, label) with the label encoding of `config`."""
    inputs = {"image": images}
    if clinical is not None:
        inputs["clinical"] = clinical
    if config.one_hot:
        labels = tf.one_hot(labels, config.num_classes, dtype=tf.float32)
    return inputs, labels


def _cache(images, cache: str, paths, image_size, resize: str = "stretch", boxes=None):
    """Cache decoded uint8 images in memory, in files under a path prefix, or not at all.
    A file cache's name carries a digest of the paths, size (and boxes), so it is never
    read back for a different image list, resolution or crop. tf.data completes a cache
    only when a first epoch runs to its end; a run killed mid-epoch leaves a `.lockfile` to
    delete by hand."""
    if cache == "none":
        return images
    if cache == "memory":
        return images.cache()
    # Optional parts join the key only when used: existing caches keep their names.
    key = (list(paths), tuple(image_size)) + ((resize,) if resize != "stretch" else ())
    key += () if boxes is None else (hashlib.sha1(boxes.tobytes()).hexdigest(),)
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
    prefix = Path(cache)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    height, width = image_size
    return images.cache(f"{prefix}-{height}x{width}-{digest}")


def _check_inputs(paths, labels, clinical, num_classes: int):
    """Paths as str, labels as int32 [N] (or float32 targets [N, T], see `_check_targets`),
    clinical as float32 [N, F] or None; or ValueError."""
    paths = [str(path) for path in paths]
    if not paths:
        raise ValueError("no image paths given")
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = _check_targets(labels, len(paths))
    elif labels.shape != (len(paths),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {len(paths)} integers, got {labels.dtype}{labels.shape}")
    elif labels.min() < 0 or labels.max() >= num_classes:
        low, high = labels.min(), labels.max()
        raise ValueError(f"labels must lie in [0, {num_classes}), got {low}..{high}")
    else:
        labels = labels.astype(np.int32)
    if clinical is not None:
        clinical = np.asarray(clinical, np.float32)
        if clinical.ndim != 2 or len(clinical) != len(paths):
            raise ValueError(f"clinical must be [{len(paths)}, F], got {clinical.shape}")
    return paths, labels, clinical


def _check_boxes(boxes, count: int) -> np.ndarray:
    """Boxes as float32 [N, 4] (x0, y0, x1, y1) inside [0, 1] with x0 < x1, y0 < y1; or
    ValueError."""
    boxes = np.asarray(boxes, np.float32)
    if boxes.shape != (count, 4):
        raise ValueError(f"boxes must be [{count}, 4], got {boxes.shape}")
    inside = np.isfinite(boxes).all() and boxes.min() >= 0 and boxes.max() <= 1
    if not inside or (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
        raise ValueError("boxes must be fractions x0 < x1, y0 < y1 within [0, 1]")
    return boxes


def _check_targets(targets: np.ndarray, count: int) -> np.ndarray:
    """Multi-task binary targets [N, T]: 0 or 1 per task, -1 where an image is not part of a
    task (the masked loss skips those entries). Passed through as float32."""
    if len(targets) != count or not np.isin(targets, (-1, 0, 1)).all():
        raise ValueError(f"multi-task targets must be [{count}, T] of -1, 0 or 1, got "
                         f"{targets.dtype}{targets.shape}")
    return targets.astype(np.float32)


# --- class weights -------------------------------------------------------------------------


def compute_class_weights(labels, num_classes: int = len(CLASSES)) -> dict[int, float]:
    """"Balanced" class weights n / (k * count_c), k = number of classes present, as
    sklearn's compute_class_weight("balanced"): the weights average 1 over the samples.
    Classes absent from `labels` get 0.0: they never occur, so the value is inert, and the
    dict still covers every class index, as Keras' `class_weight` wants."""
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    present = np.count_nonzero(counts)
    return {
        index: float(len(labels) / (present * count)) if count else 0.0
        for index, count in enumerate(counts)
    }


def compute_sample_weights(labels, class_weights: dict[int, float]) -> np.ndarray:
    """Per-sample weights float32 [N]: the class weight of each label."""
    table = np.zeros(max(class_weights) + 1, np.float32)
    table[list(class_weights)] = list(class_weights.values())
    return table[np.asarray(labels, np.int64)]
