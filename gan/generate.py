"""Synthetic lesions from a trained InfoGAN run, written as a dataset in the HAM10000 layout.

    python -m gan generate RUN_DIR --num-images N --out DIR [--class mel] [--seed S]

    DIR/
      HAM10000_metadata.csv   lesion_id, image_id, dx, dx_type, age, sex, localization, dataset
      images/<image_id>.jpg   the run's average (EMA) generator's images, R x R (or --size)
      codes.csv               image_id, dx and the continuous codes each image was drawn with
      generation.json         run, seed, classes and counts: what repeats this set
      README.txt              says the images are synthetic

Every row is marked synthetic twice: ``dataset`` is "gan" and ``dx_type`` is "synthetic"
(``dermnet.data.vocabulary.SYNTHETIC_DX_TYPE``: the diagnosis is the class code the image
was generated with, nothing confirmed it). Each image is its own lesion; ids are
``GAN<seed>_<n>`` (lesions ``GANL<seed>_<n>``), so sets made with different seeds can be
merged with each other and with real HAM10000 rows. ``train.py --data-dir DIR`` and
``python -m dermnet.data check DIR`` read the folder as they read HAM10000.

Classes: ``--class`` (repeatable) picks the class codes, default all seven; the images are
shared equally among them, the first classes in ``CLASSES`` order taking the remainder.
Clinical fields: each image gets the age, sex and site of a random real training row of its
class (the run's ``real_metadata.csv``); a run trained with clinical codes is also
conditioned on that row, so the fields are the ones the image was generated from.

The folder is built beside ``--out`` and renamed into place once the whole set is written
and passes the HAM10000 reader's checks, so ``--out`` is either absent or complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dermnet.data.clinical import ClinicalEncoder, load_clinical_encoder
from dermnet.data.staging import check_new_folder, staged_folder
from dermnet.data.vocabulary import CLASSES, METADATA_FILENAME, SYNTHETIC_DX_TYPE
from dermnet.runs.folder import FINISHED
from gan.checkpoints import CLINICAL_ENCODER, GENERATOR, REAL_METADATA
from gan.clinical import load_real_metadata
from gan.codes import make_code_batch
from gan.config import GanConfig, load_gan_config

IMAGE_FOLDER = "images"                        # HAM10000's "flat" layout
DATASET_MARK = "gan"                           # the `dataset` column of every row
FORMATS = {"jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], "png": [cv2.IMWRITE_PNG_COMPRESSION, 3]}
MAX_IMAGES = 1_000_000


class GenerationError(ValueError):
    """A run, option or output folder that generation cannot use; the message says which."""


@dataclass(frozen=True, eq=False)
class GanRun:
    """A finished GAN run, loaded for sampling."""

    path: Path
    config: GanConfig
    generator: object                  # keras.Model: codes + alpha -> images in [-1, 1]
    metadata: pd.DataFrame             # the training rows' image_id, dx, age, sex, site
    encoder: ClinicalEncoder | None    # the clinical encoding, for runs with clinical codes

    @property
    def resolution(self) -> int:
        return self.config.network.final_resolution


def load_gan_run(run_dir: str | Path) -> GanRun:
    """Read a finished run's config, average generator and training metadata."""
    import keras

    import gan.networks  # noqa: F401  (registers the networks' layers for loading)

    path = Path(run_dir)
    for name in ("config.json", FINISHED, GENERATOR, REAL_METADATA):
        if not (path / name).is_file():
            hint = (" (the run has not finished: run its train command again to resume it)"
                    if name in (FINISHED, GENERATOR) else "")
            raise GenerationError(f"{path}: not a finished GAN run, no {name}{hint}")
    config = load_gan_config(path / "config.json")
    try:
        generator = keras.saving.load_model(path / GENERATOR)
    except Exception as error:  # Keras raises many types for a file that is not a model
        raise GenerationError(f"{path / GENERATOR}: cannot load ({error})") from error
    encoder = None
    if config.network.clinical_codes:
        encoder = load_clinical_encoder(path / CLINICAL_ENCODER)
    metadata = load_real_metadata(path / REAL_METADATA)
    return GanRun(path, config, generator, metadata, encoder)


def parse_classes(names) -> list[int]:
    """Class codes (e.g. ["mel", "df"]) -> sorted unique indices; None or [] -> all."""
    if not names:
        return list(range(len(CLASSES)))
    unknown = [name for name in names if name not in CLASSES]
    if unknown:
        raise GenerationError(f"unknown class {', '.join(unknown)}; valid: {', '.join(CLASSES)}")
    return sorted({CLASSES.index(name) for name in names})


def plan_classes(num_images: int, classes: list[int]) -> np.ndarray:
    """int [num_images]: equal shares of ``classes``, the first taking the remainder."""
    if not 1 <= num_images <= MAX_IMAGES:
        raise GenerationError(f"--num-images must be between 1 and {MAX_IMAGES}, "
                              f"got {num_images}")
    counts = np.full(len(classes), num_images // len(classes))
    counts[:num_images % len(classes)] += 1
    return np.repeat(np.asarray(classes, np.int64), counts)


def sample_clinical_rows(metadata: pd.DataFrame, classes: np.ndarray,
                         rng: np.random.Generator) -> pd.DataFrame:
    """For each class index, the age, sex and localization of a random real row of it."""
    picked = np.empty(len(classes), np.int64)
    for index in np.unique(classes):
        rows = np.flatnonzero(metadata["dx"].to_numpy() == CLASSES[index])
        if not len(rows):
            raise GenerationError(f"the run's training data hold no {CLASSES[index]} image, "
                                  "so there is no clinical row to draw for that class")
        chosen = classes == index
        picked[chosen] = rows[rng.integers(0, len(rows), chosen.sum())]
    return metadata.iloc[picked][["age", "sex", "localization"]].reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class SyntheticBatch:
    """Codes of a set of synthetic images, and a way to render them in batches."""

    classes: np.ndarray          # int [N]
    codes: dict                  # the generator's code inputs, float32 numpy
    clinical: pd.DataFrame       # age, sex, localization per image


def draw_synthetic_codes(run: GanRun, classes: np.ndarray, seed: int) -> SyntheticBatch:
    """Codes for ``classes`` (one per image) and clinical rows, all from ``seed``."""
    rng = np.random.default_rng([seed, 0x6A4E])
    clinical = sample_clinical_rows(run.metadata, classes, rng)
    encoded = run.encoder.transform(clinical) if run.encoder is not None else None
    codes = make_code_batch(rng, len(classes), run.config.network, classes=classes,
                            clinical=encoded)
    return SyntheticBatch(classes, codes, clinical)


def render(run: GanRun, codes: dict, start: int, stop: int) -> np.ndarray:
    """uint8 [stop - start, R, R, 3] from the average generator for rows start..stop-1."""
    import keras

    inputs = {name: value[start:stop] for name, value in codes.items()}
    inputs["alpha"] = np.ones((stop - start, 1), np.float32)
    images = keras.ops.convert_to_numpy(run.generator(inputs, training=False))
    return to_uint8(images)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Generator images in [-1, 1] -> uint8 0..255 (rounded, clipped)."""
    return np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_synthetic_dataset(run: GanRun, out_dir: str | Path, num_images: int,
                            classes: list[int] | None = None, seed: int = 0,
                            size: int | None = None, image_format: str = "jpg",
                            batch_size: int = 64, log=print) -> Path:
    """Write ``num_images`` synthetic images with their metadata to ``out_dir`` (see the
    module docstring); returns the folder. Same run and arguments, same images."""
    out_dir = Path(out_dir)
    _check_options(out_dir, seed, size, image_format, batch_size)
    plan = plan_classes(num_images, classes if classes is not None else parse_classes(None))
    batch = draw_synthetic_codes(run, plan, seed)
    with staged_folder(out_dir) as staging:
        (staging / IMAGE_FOLDER).mkdir()
        image_ids = [f"GAN{seed}_{index:07d}" for index in range(num_images)]
        for start in range(0, num_images, batch_size):
            stop = min(start + batch_size, num_images)
            for offset, image in enumerate(render(run, batch.codes, start, stop)):
                _write_image(staging / IMAGE_FOLDER / f"{image_ids[start + offset]}."
                             f"{image_format}", image, size, image_format)
            log(f"generated {stop}/{num_images} images")
        _write_tables(staging, run, batch, image_ids, seed, size, image_format)
        _validate(staging)
    return out_dir


def _check_options(out_dir: Path, seed: int, size, image_format: str, batch_size: int):
    try:
        check_new_folder(out_dir, "synthetic images")
    except ValueError as error:
        raise GenerationError(str(error)) from None
    if seed < 0:
        raise GenerationError(f"--seed must be non-negative, got {seed}")
    if size is not None and not 8 <= size <= 4096:
        raise GenerationError(f"--size must be between 8 and 4096 pixels, got {size}")
    if image_format not in FORMATS:
        raise GenerationError(f"--format must be one of {', '.join(FORMATS)}, "
                              f"got {image_format!r}")
    if batch_size < 1:
        raise GenerationError(f"--batch-size must be positive, got {batch_size}")


def _write_image(path: Path, image: np.ndarray, size: int | None, image_format: str) -> None:
    if size is not None and size != image.shape[0]:
        shrinking = size < image.shape[0]
        image = cv2.resize(image, (size, size),
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    ok, data = cv2.imencode(f".{image_format}", image[:, :, ::-1], FORMATS[image_format])
    if not ok:
        raise GenerationError(f"{path}: OpenCV could not encode the image")
    path.write_bytes(data.tobytes())


def _write_tables(folder: Path, run: GanRun, batch: SyntheticBatch, image_ids: list[str],
                  seed: int, size, image_format: str) -> None:
    dx = [CLASSES[index] for index in batch.classes]
    metadata = pd.DataFrame({
        "lesion_id": [image_id.replace("GAN", "GANL", 1) for image_id in image_ids],
        "image_id": image_ids, "dx": dx, "dx_type": SYNTHETIC_DX_TYPE,
        "age": batch.clinical["age"].to_numpy(), "sex": batch.clinical["sex"].to_numpy(),
        "localization": batch.clinical["localization"].to_numpy(), "dataset": DATASET_MARK})
    metadata.to_csv(folder / METADATA_FILENAME, index=False, lineterminator="\n")
    continuous = batch.codes["continuous"]
    codes = pd.DataFrame({"image_id": image_ids, "dx": dx}
                         | {f"continuous_{k}": continuous[:, k]
                            for k in range(continuous.shape[1])})
    codes.to_csv(folder / "codes.csv", index=False, lineterminator="\n", float_format="%.6f")
    side = size or run.resolution
    counts = {CLASSES[index]: int(count)
              for index, count in zip(*np.unique(batch.classes, return_counts=True))}
    record = {"run": str(run.path.resolve()), "seed": seed, "num_images": len(image_ids),
              "class_counts": counts, "image_size": side, "format": image_format,
              "resolution": run.resolution,
              "clinical_conditioned": run.encoder is not None}
    (folder / "generation.json").write_text(json.dumps(record, indent=2) + "\n")
    (folder / "README.txt").write_text(
        "SYNTHETIC IMAGES made by a generative adversarial network (dermnet gan/).\n"
        "Not real patients or lesions; not for clinical use or medical conclusions.\n\n"
        f"Run: {run.path.resolve()}\nSeed: {seed}\n"
        f"Images: {len(image_ids)}, {side}x{side} {image_format.upper()}, classes "
        f"{', '.join(f'{name} {count}' for name, count in counts.items())}\n"
        f"Every metadata row has dx_type={SYNTHETIC_DX_TYPE} and dataset={DATASET_MARK}; dx is "
        "the class code,\nage/sex/localization a random real training row of that class.\n")


def _validate(folder: Path) -> None:
    """The HAM10000 reader must accept the set; anything it rejects is a bug here."""
    from dermnet.data.ham10000 import DatasetError, load_ham10000

    try:
        dataset = load_ham10000(folder, check_images="header")
    except DatasetError as error:
        raise RuntimeError(f"the generated set fails the HAM10000 checks: {error}") from error
    if dataset.warnings:
        raise RuntimeError("the generated set draws HAM10000 warnings: "
                           + "; ".join(dataset.warnings))
