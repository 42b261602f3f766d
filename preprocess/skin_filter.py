"""The non-skin filter: the data-cleansing step of the multiple-lesion study.

The study's archive of clinical photographs also held non-skin pictures (patient
identification slips, skin-sensitiser packs); a small CNN trained on 200 skin and 200
non-skin images removed them before training. This module owns that filter: the network
(`build_skin_filter`), how a photograph becomes its input (`prepare_image`, `load_image`),
the training folder layout (`load_training_folder`), training with augmentation and early
stopping (`train_skin_filter`), the saved form (`save_skin_filter`, `load_skin_filter`) and
scoring, reporting and moving the files of a folder (`score_files`, `write_report`,
`move_non_skin`).

A training folder holds one sub-folder per class, `skin/` and `non_skin/`, with images of
any size and format OpenCV reads. Every image is centre-cropped to the aspect of the model
input (square by default), then resized. The model takes raw RGB pixels 0-255 (uint8 or
float) on its input "image" and outputs the skin probability.

Keras (any backend), OpenCV and numpy only: no TensorFlow import, no `dermnet`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import cv2
import keras
import numpy as np

from preprocess.skin_filter_config import TrainingConfig

CLASS_NAMES = ("non_skin", "skin")  # label index = position; the model outputs P(skin)
MODEL_FILENAME = "skin_filter.keras"
METADATA_FILENAME = "skin_filter.json"
FORMAT_VERSION = 1
DEFAULT_THRESHOLD = 0.5
UNREADABLE = "unreadable"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
REPORT_COLUMNS = ("file", "skin_probability", "decision")


@dataclasses.dataclass(frozen=True)
class SkinFilter:
    """A trained filter: the network, its input size and decision threshold."""

    model: keras.Model
    image_size: tuple[int, int]
    threshold: float
    metadata: dict

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Skin probabilities of a batch of prepared images, shape (n,)."""
        return np.asarray(self.model.predict_on_batch(images), np.float64).reshape(-1)

    def decide(self, probability: float) -> str:
        return CLASS_NAMES[int(probability >= self.threshold)]


@dataclasses.dataclass(frozen=True)
class Score:
    """The verdict on one file; `probability` is None when it could not be read."""

    path: Path
    probability: float | None
    decision: str


# ---- the network ------------------------------------------------------------------------

def build_skin_filter(image_size: tuple[int, int] = (128, 128),
                      widths: Sequence[int] = (16, 32, 64, 128),  # channels per conv block
                      dropout: float = 0.3) -> keras.Model:
    """A small CNN: conv blocks (Conv-BatchNorm-ReLU-MaxPool), global pooling, one sigmoid."""
    layers = keras.layers
    inputs = keras.Input((*image_size, 3), name="image")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)  # raw pixels in, as saved models take
    for block, width in enumerate(widths):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        # momentum 0.9: a few hundred images give few steps; 0.99 leaves stale statistics
        x = layers.BatchNormalization(momentum=0.9, name=f"norm{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="skin_probability")(x)
    return keras.Model(inputs, outputs, name="skin_filter")


# ---- images -----------------------------------------------------------------------------

def prepare_image(image: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """RGB (or grey, or RGBA) array -> uint8 RGB of `image_size`: centre crop, then resize."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
    height, width = image_size
    image = centre_crop(image, width / height)
    shrinking = image.shape[0] > height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def centre_crop(image: np.ndarray, aspect: float) -> np.ndarray:
    """The largest centred part of `image` whose width / height is `aspect`."""
    height, width = image.shape[:2]
    if width / height > aspect:
        keep = max(1, round(height * aspect))
        left = (width - keep) // 2
        return image[:, left:left + keep]
    keep = max(1, round(width / aspect))
    top = (height - keep) // 2
    return image[top:top + keep]


def load_image(path: Path, image_size: tuple[int, int]) -> np.ndarray | None:
    """A prepared RGB image, or None when the file cannot be read or decoded."""
    try:
        encoded = np.fromfile(path, np.uint8)  # imread mishandles non-ASCII paths on Windows
    except OSError:
        return None
    bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if encoded.size else None
    if bgr is None or bgr.size == 0:
        return None
    return prepare_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), image_size)


def list_images(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under `folder` (recursive, sorted), skipping hidden ones and `exclude`."""
    excluded = exclude.resolve() if exclude else None
    found = []
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if excluded and excluded in path.resolve().parents:
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(path)
    return found


def load_training_folder(data_dir: Path, image_size: tuple[int, int]
                         ) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Images and labels (1 = skin) from `skin/` and `non_skin/`, plus the unreadable files."""
    images, labels, unreadable = [], [], []
    for label, name in enumerate(CLASS_NAMES):
        folder = Path(data_dir) / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing: a training folder holds "
                                    f"{' and '.join(n + '/' for n in CLASS_NAMES)}")
        for path in list_images(folder):
            image = load_image(path, image_size)
            if image is None:
                unreadable.append(path)
                continue
            images.append(image)
            labels.append(label)
    stacked = np.stack(images) if images else np.empty((0, *image_size, 3), np.uint8)
    return stacked, np.asarray(labels, np.float32), unreadable


# ---- training ---------------------------------------------------------------------------

def split_indices(labels: np.ndarray, fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train / validation split with a fixed seed; each class needs 2 images."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label, name in enumerate(CLASS_NAMES):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            raise ValueError(f"class {name} has {len(members)} images; at least 2 are needed")
        held_out = min(len(members) - 1, max(1, round(fraction * len(members))))
        validation.extend(members[:held_out])
        train.extend(members[held_out:])
    return np.sort(train), np.sort(validation)


def augment_batch(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Random flips and small brightness and contrast changes, per image."""
    images = images.astype(np.float32)
    for index in range(len(images)):
        if rng.uniform() < 0.5:
            images[index] = images[index, :, ::-1]
        if rng.uniform() < 0.5:
            images[index] = images[index, ::-1]
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    contrast = rng.uniform(0.85, 1.15, (len(images), 1, 1, 1))
    brightness = rng.uniform(0.85, 1.15, (len(images), 1, 1, 1))
    return np.clip(((images - mean) * contrast + mean) * brightness, 0, 255).astype(np.float32)


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled, augmented, class-balanced training batches; deterministic per seed."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        counts = np.bincount(labels.astype(int), minlength=len(CLASS_NAMES))
        # Each class weighs as much as the other, whatever the folder sizes.
        self.weights = (len(labels) / (len(CLASS_NAMES) * counts))[labels.astype(int)]
        self.order = np.random.default_rng((seed, 0)).permutation(len(labels))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        chosen = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        rng = np.random.default_rng((self.seed, self.epoch, index))  # any fetch order
        images = augment_batch(rng, self.images[chosen])
        return images, self.labels[chosen], self.weights[chosen].astype(np.float32)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.labels))


def train_skin_filter(images: np.ndarray, labels: np.ndarray,
                      config: TrainingConfig = TrainingConfig(),  # noqa: B008 (frozen)
                      verbose: int = 0) -> tuple[keras.Model, dict]:
    """Train a fresh filter; returns the model (best validation loss) and its figures."""
    if images.shape[1:3] != tuple(config.image_size):
        raise ValueError(f"images are {images.shape[1:3]}, config says {config.image_size}")
    keras.utils.set_random_seed(config.seed)
    train, validation = split_indices(labels, config.validation_fraction, config.seed)
    model = build_skin_filter(config.image_size, config.widths)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="binary_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
    batches = AugmentedBatches(images[train], labels[train], config.batch_size, config.seed)
    held_out = (images[validation], labels[validation])  # uint8: the model casts, 4x less memory
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                      restore_best_weights=True),
        # A smaller step once validation loss stalls: a few hundred images give a noisy loss.
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                          patience=max(1, config.patience // 2)),
    ]
    history = model.fit(batches, validation_data=held_out, epochs=config.epochs,
                        callbacks=callbacks, verbose=verbose)
    loss, accuracy = model.evaluate(*held_out, batch_size=config.batch_size, verbose=0)
    return model, {
        "validation_accuracy": float(accuracy), "validation_loss": float(loss),
        "epochs_run": len(history.history["loss"]),
        "num_train": int(len(train)), "num_validation": int(len(validation)),
    }


# ---- saved form -------------------------------------------------------------------------

def make_metadata(config: TrainingConfig, figures: dict,
                  threshold: float = DEFAULT_THRESHOLD) -> dict:
    """The contents of skin_filter.json."""
    return {
        "format_version": FORMAT_VERSION,
        "image_size": list(config.image_size),
        "threshold": threshold,
        "class_names": list(CLASS_NAMES),
        "output": "probability that the image shows skin",
        "preprocessing": "RGB 0-255, centre crop to the input aspect, area resize",
        **figures,
        "training": json.loads(json.dumps(dataclasses.asdict(config))),  # tuples -> lists
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
    }


def save_skin_filter(model: keras.Model, out_dir: Path, metadata: dict) -> Path:
    """Write skin_filter.keras, then skin_filter.json, each replaced atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    replace_atomically(out_dir / MODEL_FILENAME, lambda temporary: model.save(temporary))
    text = json.dumps(metadata, indent=2) + "\n"
    replace_atomically(out_dir / METADATA_FILENAME, lambda temporary: temporary.write_text(text))
    return out_dir


def replace_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Write to a temporary name in the same folder, then rename over `target`."""
    temporary = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp{target.suffix}")
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def load_skin_filter(model_dir: Path, threshold: float | None = None) -> SkinFilter:
    """A saved filter; `threshold` overrides the saved one. FileNotFoundError if absent."""
    model_dir = Path(model_dir)
    for name in (MODEL_FILENAME, METADATA_FILENAME):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name} is missing (train a filter first)")
    metadata = json.loads((model_dir / METADATA_FILENAME).read_text())
    model = keras.saving.load_model(model_dir / MODEL_FILENAME, compile=False)
    chosen = metadata["threshold"] if threshold is None else threshold
    return SkinFilter(model, tuple(metadata["image_size"]), float(chosen), metadata)


# ---- applying ---------------------------------------------------------------------------

def score_files(skin_filter: SkinFilter, paths: Sequence[Path], batch_size: int = 32,
                progress: Callable[[int, int], None] | None = None) -> list[Score]:
    """Score every file in batches; unreadable files get decision 'unreadable'."""
    scores = []
    for start in range(0, len(paths), batch_size):
        batch = list(paths[start:start + batch_size])
        images = [load_image(path, skin_filter.image_size) for path in batch]
        readable = [image for image in images if image is not None]
        probabilities = iter(predict_padded(skin_filter, readable, batch_size))
        for path, image in zip(batch, images):
            if image is None:
                scores.append(Score(path, None, UNREADABLE))
                continue
            probability = float(next(probabilities))
            scores.append(Score(path, probability, skin_filter.decide(probability)))
        if progress:
            progress(len(scores), len(paths))
    return scores


def predict_padded(skin_filter: SkinFilter, images: list[np.ndarray], batch_size: int
                   ) -> np.ndarray:
    """Predict with a fixed batch shape, so the last short batch compiles nothing new."""
    if not images:
        return np.empty(0)
    batch = np.zeros((max(batch_size, len(images)), *images[0].shape), np.float32)
    batch[:len(images)] = np.stack(images)
    return skin_filter.predict(batch)[:len(images)]


def write_report(scores: Sequence[Score], root: Path, stream: TextIO) -> None:
    """CSV `file,skin_probability,decision`; paths relative to `root`, POSIX style."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for score in scores:
        probability = "" if score.probability is None else f"{score.probability:.6f}"
        writer.writerow([score.path.relative_to(root).as_posix(), probability, score.decision])


def move_non_skin(scores: Sequence[Score], root: Path, move_to: Path, dry_run: bool = False,
                  log: TextIO | None = None) -> dict[str, int]:
    """Move non-skin files under `move_to`, keeping relative paths; never overwrite.

    Each move (or, with `dry_run`, each move it would make) is printed to `log` (stderr).
    """
    log = log or sys.stderr
    counts = {"moved": 0, "kept_existing": 0}
    for score in scores:
        if score.decision != CLASS_NAMES[0]:
            continue  # skin stays; unreadable files stay too and are listed in the report
        target = Path(move_to) / score.path.relative_to(root)
        if target.exists():
            print(f"not moved, {target} exists: {score.path}", file=log)
            counts["kept_existing"] += 1
            continue
        print(f"{'would move' if dry_run else 'move'} {score.path} -> {target}", file=log)
        if not dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(score.path, target)
        counts["moved"] += 1
    return counts
