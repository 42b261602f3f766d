"""A trained run's predictions on one of its splits: the model, its data, test-time
augmentation and the runtime per image. TensorFlow-specific (tf.data pipelines).

``load_evaluation(run_dir, split, data_dir)`` rebuilds everything from the run directory
(config.json, splits.csv, clinical_encoding.json, model.keras); ``predict_split`` returns the
class probabilities in row order, averaged over ``tta`` fixed transforms.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from dermnet.config import Config, load_config
from dermnet.data.provenance import describe_provenance
from dermnet.evaluation.options import MAX_TTA, SPLITS, TTA_TRANSFORMS
from dermnet.runs.datasets import make_evaluation_dataset
from dermnet.runs.tasks import RunData, get_task, prepare_run_data


class EvaluationError(RuntimeError):
    """The run directory or the requested evaluation is unusable (message says why)."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
    run_dir: Path
    config: Config
    data: RunData
    model: keras.Model
    split: str                 # "test", "val" or "holdout"
    frame: pd.DataFrame        # the split's rows: image_id, lesion_id, dx, label, path, ...

    @property
    def truth(self) -> np.ndarray:
        return self.frame["label"].to_numpy()

    @property
    def groups(self) -> np.ndarray:
        return self.frame["lesion_id"].to_numpy()


def load_evaluation(run_dir: str | Path, split: str = "test", data_dir: str | Path | None = None,
                    log=print) -> Evaluation:
    """Everything an evaluation needs, from a finished run directory."""
    from dermnet.models import ModelFileError, load_model

    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise EvaluationError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    _require(run_dir, "config.json")
    config = load_config(run_dir / "config.json")
    for name in get_task(config.data.task).run_files:
        _require(run_dir, name)
    if data_dir is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, data_dir=str(data_dir)))
    data = prepare_run_data(config, run_dir, log=lambda message: None)
    frame = _split_rows(data, split, run_dir)
    if frame.empty:
        raise EvaluationError(f"{run_dir}: the {split} split has no images")
    log(f"{describe_provenance(data.provenance) if data.provenance else data.data_dir}: "
        f"{len(frame)} {split} images")
    try:
        model = load_model(run_dir / "model.keras")
    except ModelFileError as error:
        raise EvaluationError(str(error)) from None
    return Evaluation(run_dir, config, data, model,
                      "val" if split == "fold" else split, frame)


def _split_rows(data: RunData, split: str, run_dir: Path) -> pd.DataFrame:
    if split == "holdout":
        if data.holdout is None:
            raise EvaluationError(f"{run_dir}: this run held out no source collection (train "
                                  "with --set data.holdout_sources=NAME for a holdout split)")
        return data.holdout
    return data.test if split == "test" else data.validation


def _require(run_dir: Path, name: str) -> None:
    if not (run_dir / name).is_file():
        raise EvaluationError(f"{run_dir}: no {name}; is this a finished training run "
                              "directory (train.py ... --out RUN_DIR)?")


def predict_split(evaluation: Evaluation, tta: int = 1, batch_size: int | None = None,
                  log=print) -> np.ndarray:
    """Probabilities [N, K] in the split's row order, averaged over ``tta`` transforms."""
    check_tta(tta)
    total = None
    for name in TTA_TRANSFORMS[:tta]:
        dataset = _dataset(evaluation, batch_size).map(
            lambda inputs, label, name=name: (_transform_inputs(inputs, name), label))
        if tta > 1:
            log(f"test-time augmentation: {name}")
        probabilities = evaluation.model.predict(dataset, verbose=_verbosity())
        total = probabilities if total is None else total + probabilities
    check_finite_scores(total, evaluation.run_dir / "model.keras")
    return total / tta


def check_finite_scores(scores: np.ndarray, model_path) -> None:
    """A model whose weights went non-finite scores every image ``nan``: an error naming the
    model, never metrics computed from ``nan`` (the argmax of ``nan`` is class 0)."""
    bad = ~np.isfinite(scores).all(axis=-1)
    if bad.any():
        raise EvaluationError(
            f"{model_path}: the model's output is not finite for {int(bad.sum())} of "
            f"{len(scores)} images (nan or inf): its weights are broken, for example by a "
            "training run that diverged; retrain it")


def check_tta(tta: int) -> None:
    if not 1 <= tta <= MAX_TTA:
        raise EvaluationError(f"--tta must be between 1 and {MAX_TTA}, not {tta}")


def _dataset(evaluation: Evaluation, batch_size: int | None) -> tf.data.Dataset:
    config = evaluation.config
    return make_evaluation_dataset(evaluation.frame, evaluation.data, config,
                                   batch_size or config.data.batch_size,
                                   lesion_box_cache(evaluation))


def lesion_box_cache(evaluation: Evaluation) -> Path | None:
    """The run directory, whose lesion_boxes.csv (data.lesion_crop) holds its own dataset's
    boxes by image id; None for another image bank, whose ids may name other images."""
    return evaluation.run_dir if evaluation.split in SPLITS else None


def _verbosity() -> int:
    """A progress bar on a terminal; nothing in logs (one line per batch would flood them)."""
    return 1 if sys.stdout.isatty() else 0


def _transform_inputs(inputs: dict, name: str) -> dict:
    return {**inputs, "image": transform_images(inputs["image"], name)}


def transform_images(images, name: str):
    """Apply one named TTA transform (``+``-joined steps) to uint8 images [B, H, W, 3]."""
    for step in name.split("+"):
        if step == "flip_left_right":
            images = tf.reverse(images, axis=[2])
        elif step == "flip_up_down":
            images = tf.reverse(images, axis=[1])
        elif step == "rotate_180":
            images = tf.reverse(images, axis=[1, 2])
        elif step.startswith("rotate_"):
            images = _rotate(images, float(step.removeprefix("rotate_")))
        elif step != "identity":
            raise ValueError(f"unknown test-time transform {step!r}")
    return images


def _rotate(images, degrees: float):
    """Rotate about the image centre with reflected borders, bilinear, keeping uint8."""
    angle = math.radians(degrees)
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    cos, sin = math.cos(angle), math.sin(angle)
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): a rotation
    # about the centre (cx, cy).
    cx, cy = (width - 1) / 2, (height - 1) / 2
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                          sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
    transforms = tf.tile(transform[None], [shape[0], 1])
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms,
        output_shape=shape[1:3], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="REFLECT")
    return tf.cast(tf.clip_by_value(tf.round(rotated), 0, 255), images.dtype)


def measure_runtime(evaluation: Evaluation, batch_size: int | None = None,
                    repeats: int = 20) -> dict:
    """Milliseconds per image of the model's forward pass on this machine, images already
    decoded: one image at a time (median of ``repeats`` calls) and in batches (median batch
    time / batch size). Decoding is excluded: it depends on the disk and the JPEG size."""
    batch_size = batch_size or evaluation.config.data.batch_size
    inputs, _ = next(iter(_dataset(evaluation, batch_size)))
    single = {key: value[:1] for key, value in inputs.items()}
    return {"batch_1_ms": _median_call_ms(evaluation.model, single, repeats),
            "batched_ms": _median_call_ms(evaluation.model, inputs, max(3, repeats // 4))
            / int(inputs["image"].shape[0]),
            "batch_size": int(inputs["image"].shape[0]),
            "device": _device_name(),
            "measures": "model forward pass per image, decoding excluded, median of calls"}


def _median_call_ms(model: keras.Model, inputs: dict, repeats: int) -> float:
    model(inputs, training=False)  # warm-up: tracing and memory allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(model(inputs, training=False))  # block until the result exists
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _device_name() -> str:
    gpus = tf.config.list_logical_devices("GPU")
    return f"GPU ({len(gpus)})" if gpus else "CPU"
