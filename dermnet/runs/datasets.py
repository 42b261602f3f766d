"""A run's ``tf.data`` pipelines, for any task (``dermnet.runs.tasks.RunData``).

Training batches are made per epoch from (seed, epoch), so a resumed run sees exactly the
batches an uninterrupted one would; evaluation batches are ordered and unaugmented. With
``data.lesion_crop``, images are cut to their estimated lesion boxes, cached in the run
directory's ``lesion_boxes.csv``. TensorFlow-specific.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from dermnet.config import Config
from dermnet.data.lesion_box import estimate_lesion_boxes
from dermnet.data.pipeline import PipelineConfig, build_dataset, build_epoch_dataset
from dermnet.runs.atomic import write_csv_atomic
from dermnet.runs.tasks import RunData

LESION_BOXES = "lesion_boxes.csv"  # a run directory's cache of crop boxes (data.lesion_crop)


def _pipeline_config(config: Config, global_batch: int) -> PipelineConfig:
    data = config.data
    return PipelineConfig(image_size=tuple(data.image_size), resize=data.resize,
                          batch_size=global_batch,
                          cache=data.cache, augment=data.augment, seed=config.training.seed,
                          deterministic=True)


def make_training_dataset(data: RunData, config: Config, first_epoch: int, last_epoch: int,
                          global_batch: int, workdir: Path | None = None) -> tf.data.Dataset:
    """Batches of epochs ``first_epoch..last_epoch-1``, each shuffled and augmented from
    (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
    With ``data.lesion_crop``, images are cut to their lesion boxes (cached in ``workdir``)."""
    frame = data.training
    dataset = build_epoch_dataset(frame["path"].tolist(), data.targets(frame),
                                  data.clinical(frame, config),
                                  config=_pipeline_config(config, global_batch),
                                  first_epoch=first_epoch, last_epoch=last_epoch,
                                  boxes=make_lesion_boxes(frame, config, workdir))
    return _shard_by_data(dataset)


def make_evaluation_dataset(frame: pd.DataFrame, data: RunData, config: Config,
                            global_batch: int, workdir: Path | None = None) -> tf.data.Dataset:
    """Ordered, unaugmented batches of ``frame``'s rows (lesion crops as in training)."""
    dataset = build_dataset(frame["path"].tolist(), data.targets(frame),
                            data.clinical(frame, config),
                            config=_pipeline_config(config, global_batch), training=False,
                            boxes=make_lesion_boxes(frame, config, workdir))
    return _shard_by_data(dataset)


def make_lesion_boxes(frame: pd.DataFrame, config: Config,
                      workdir: Path | None = None) -> np.ndarray | None:
    """float32 [N, 4] crop boxes of ``frame``'s rows when ``data.lesion_crop`` > 0, else None:
    each image's estimated lesion box, moved out by that margin and grown to the input's
    aspect ratio (``lesion_box.estimate_crop_box``). With a ``workdir``, the boxes of every
    image seen are kept in its ``lesion_boxes.csv`` (image_id, x0, y0, x1, y1: the crop box;
    found: False where the whole image stood in), so a resumed run or its evaluation reuses
    them and only new images are estimated."""
    if not config.data.lesion_crop:
        return None
    path = None if workdir is None else Path(workdir) / LESION_BOXES
    known = (pd.read_csv(path, dtype={"image_id": str})
             if path is not None and path.exists() else None)
    rows = frame.drop_duplicates("image_id")  # oversampled rows repeat images
    if known is not None:
        rows = rows[~rows["image_id"].isin(known["image_id"])]
    if len(rows) or known is None:
        new = _estimate_crop_boxes(rows, config)
        known = new if known is None else pd.concat([known, new], ignore_index=True)
        if path is not None:
            # 9 significant digits round-trip float32 exactly: the boxes read back cut the
            # same pixels.
            write_csv_atomic(known, path, float_format="%.9g")
    table = known.set_index("image_id").loc[frame["image_id"], ["x0", "y0", "x1", "y1"]]
    return table.to_numpy(np.float32)


def _estimate_crop_boxes(rows: pd.DataFrame, config: Config) -> pd.DataFrame:
    """image_id, x0, y0, x1, y1, found of ``rows``' images (one thread per core)."""
    height, width = config.data.image_size
    boxes, found = estimate_lesion_boxes(rows["path"].tolist(), config.data.lesion_crop,
                                         width / height, workers=os.cpu_count() or 1)
    table = pd.DataFrame(boxes.astype(np.float64), columns=["x0", "y0", "x1", "y1"])
    table.insert(0, "image_id", rows["image_id"].to_numpy())
    table["found"] = found
    return table


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Multi-worker runs split batches between workers, not files (the inputs are one list).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
