"""Prediction with a trained model: a run directory (or a bare ``model.keras``) and image
files -> class probabilities.

``load_predictor(path)`` loads the model and, for a clinical model, the run's clinical
encoding; ``Predictor.predict(images, clinical)`` returns probabilities [N, classes].

Images are decoded and resized by the training pipeline's own ``decode_image`` (the same
JPEG DCT scale, the same resize rule), so a model sees at prediction exactly the pixels it
saw in training. That decode is TensorFlow; prediction itself is plain Keras.

Clinical data arrive as a DataFrame with columns ``age, sex, localization``, one row per
image: ``make_clinical_rows`` repeats one set of values, ``read_clinical_csv`` matches the
rows of a CSV to the images. Both validate every value against the HAM10000 vocabularies:
the encoder would quietly turn a typo into "unknown", which must not happen to a patient's
data. Errors are exceptions: ``InputFileError`` (and ``ImageReadError``) for files that are
missing or unreadable, ``ClinicalInputError`` for clinical data missing or invalid.
"""

from __future__ import annotations

import json
import math
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from dermnet.config import RESIZE_MODES
from dermnet.data.clinical import ClinicalEncoder, load_clinical_encoder
from dermnet.data.lesion_box import WHOLE_IMAGE, estimate_lesion_boxes
from dermnet.data.pipeline import crop_to_box, decode_image
from dermnet.data.provenance import describe_provenance
from dermnet.data.vocabulary import AGE_RANGE, CLASSES, LOCALIZATIONS, SEXES

MODEL_FILENAME = "model.keras"
ENCODING_FILENAME = "clinical_encoding.json"
CONFIG_FILENAME = "config.json"
DATA_FILENAME = "data.json"  # what the run trained on (dermnet.data.provenance)
CLINICAL_COLUMNS = ("age", "sex", "localization")
CSV_COLUMNS = ("image", *CLINICAL_COLUMNS)


class InputFileError(ValueError):
    """A model, image or CSV file is missing or cannot be used."""


class ImageReadError(InputFileError):
    """Image files that cannot be read; ``problems`` maps each file to the reason."""

    def __init__(self, problems: dict[Path, str]):
        self.problems = dict(problems)
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in self.problems.items()))


class ClinicalInputError(ValueError):
    """Clinical data the model needs are missing, or a value is outside its vocabulary."""


@dataclass(frozen=True)
class Predictor:
    """A loaded model with what it needs to turn files into probabilities."""

    model: keras.Model               # inputs "image" (and "clinical"), class scores out
    encoder: ClinicalEncoder | None  # the run's clinical encoding; None: image-only model
    class_names: tuple[str, ...]     # class codes in output order
    image_size: tuple[int, int]      # (H, W) of the model's image input
    resize: str = "stretch"          # the run's data.resize: how another aspect is fitted
    lesion_crop: float = 0.0         # the run's data.lesion_crop: > 0 cuts to the lesion box
    provenance: dict | None = None   # the run's data.json; None: unknown (a bare model)
    source: str = "the model"        # the model file, for messages

    @property
    def needs_clinical(self) -> bool:
        return self.encoder is not None

    def predict(self, images: list[Path], clinical: pd.DataFrame | None = None) -> np.ndarray:
        """Probabilities float32 [N, classes] for image files (all read before any predicted)
        and, for a clinical model, their clinical rows (columns age, sex, localization)."""
        return self.predict_inputs(self.make_inputs(self.read_images(images), clinical))

    def read_images(self, paths) -> np.ndarray:
        """uint8 [N, H, W, 3] for the model, decoded, cropped and fitted as in its training
        run (the lesion box estimated the same way when the run cropped to lesions)."""
        boxes = None
        if self.lesion_crop:
            height, width = self.image_size
            readable = [path for path in map(Path, paths) if path.is_file()]
            try:
                estimated, _ = estimate_lesion_boxes(readable, self.lesion_crop, width / height)
            except ValueError:  # an unreadable file: read_images below names it
                estimated = np.tile(WHOLE_IMAGE, (len(readable), 1))
            found = dict(zip(readable, estimated))
            boxes = np.stack([found.get(Path(path), WHOLE_IMAGE) for path in paths])
        pixels = read_images(paths, self.image_size, self.resize, boxes)
        warn_small_images(paths, self.image_size)
        return pixels

    def describe_training_data(self) -> str:
        """What the model was trained on, in one line (real or SYNTHETIC images, sizes)."""
        if self.provenance is None:
            return "trained on images of unknown provenance (no data.json beside the model)"
        return f"trained on {describe_provenance(self.provenance)}"

    def make_inputs(self, pixels: np.ndarray, clinical: pd.DataFrame | None = None) -> dict:
        """The model's input dict for uint8 pixels [N, H, W, 3] and clinical rows."""
        inputs = {"image": pixels}
        if not self.needs_clinical:
            if clinical is not None:
                warnings.warn("this model uses no clinical data: the clinical inputs are ignored",
                              stacklevel=2)
            return inputs
        if clinical is None:
            raise ClinicalInputError("this model needs clinical data (age, sex, localization) "
                                     "for every image")
        if len(clinical) != len(pixels):
            raise ClinicalInputError(f"{len(clinical)} clinical rows for {len(pixels)} images")
        inputs["clinical"] = self.encoder.transform(check_clinical_rows(clinical))
        return inputs

    def predict_inputs(self, inputs: dict) -> np.ndarray:
        """Probabilities [N, classes] for a ``make_inputs`` dict."""
        scores = self.model.predict(inputs, verbose=0)
        if self.model.layers[-1].name == "logits":  # built with output="logits": no softmax
            scores = keras.ops.convert_to_numpy(keras.ops.softmax(scores, axis=-1))
        scores = np.asarray(scores, np.float32)
        bad = ~np.isfinite(scores).all(axis=-1)
        if bad.any():  # never a "nan%" class or a bare NaN in the JSON
            raise InputFileError(
                f"{self.source}: the model's output is not finite for {int(bad.sum())} of "
                f"{len(scores)} images (nan or inf): its weights are broken, for example by "
                "a training run that diverged; retrain it")
        return scores


# --- loading -------------------------------------------------------------------------------


def load_predictor(path: str | Path) -> Predictor:
    """A run directory (its model.keras and clinical_encoding.json) or a bare .keras file
    (the encoding is looked up beside it) -> ``Predictor``."""
    model_path = _locate_model(Path(path))
    model = _load_model(model_path)
    names = _input_names(model)
    if "image" not in names:
        raise InputFileError(f"{model_path}: not a dermnet classifier (no input named 'image')")
    classes = int(model.output_shape[-1])
    if classes != len(CLASSES):
        raise InputFileError(f"{model_path}: the model has {classes} outputs; expected "
                             f"{len(CLASSES)} ({', '.join(CLASSES)})")
    encoder = _load_encoder(model, model_path) if "clinical" in names else None
    resize, lesion_crop = _run_input_fitting(model_path)
    return Predictor(model, encoder, CLASSES, _image_size(model, model_path), resize,
                     lesion_crop, _read_provenance(model_path), str(model_path))


def _run_input_fitting(model_path: Path) -> tuple[str, float]:
    """The run's data.resize and data.lesion_crop from config.json beside the model;
    ("stretch", 0.0), what every run before the options did, when there is none."""
    path = model_path.parent / CONFIG_FILENAME
    try:
        data = json.loads(path.read_text())["data"]
        resize, lesion_crop = data.get("resize", "stretch"), data.get("lesion_crop", 0.0)
    except (OSError, ValueError, KeyError, AttributeError):
        return "stretch", 0.0
    if resize not in RESIZE_MODES:
        raise InputFileError(f"{path}: data.resize {resize!r} is not one of "
                             f"{', '.join(RESIZE_MODES)}")
    if not isinstance(lesion_crop, (int, float)) or lesion_crop < 0:
        raise InputFileError(f"{path}: data.lesion_crop {lesion_crop!r} is not a margin >= 0")
    return resize, float(lesion_crop)


def _read_provenance(model_path: Path) -> dict | None:
    path = model_path.parent / DATA_FILENAME
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) and "kind" in payload else None


def _locate_model(path: Path) -> Path:
    if path.is_dir():
        model_path = path / MODEL_FILENAME
        if not model_path.is_file():
            raise InputFileError(f"{path}: not a run directory (no {MODEL_FILENAME})")
        return model_path
    if not path.exists():
        raise InputFileError(f"{path}: no such model file or run directory")
    return path


def _load_model(path: Path) -> keras.Model:
    from dermnet.models import ModelFileError, load_model  # registers dermnet's layers

    try:
        return load_model(path)
    except ModelFileError as error:
        raise InputFileError(str(error)) from None


def _input_names(model: keras.Model) -> list[str]:
    return [tensor.name for tensor in model.inputs]


def _load_encoder(model: keras.Model, model_path: Path) -> ClinicalEncoder:
    path = model_path.parent / ENCODING_FILENAME
    if not path.is_file():
        raise InputFileError(f"{model_path}: the model uses clinical data, but there is no "
                             f"{ENCODING_FILENAME} beside it (copy it from the run directory)")
    try:
        encoder = load_clinical_encoder(path)
    except ValueError as error:
        raise InputFileError(str(error)) from error
    width = int(model.get_layer("clinical").output.shape[-1])
    if encoder.num_features != width:
        raise InputFileError(f"{path}: encodes {encoder.num_features} clinical features, the "
                             f"model takes {width}")
    return encoder


def _image_size(model: keras.Model, model_path: Path) -> tuple[int, int]:
    """(H, W) from the model's image input, else from the run's config.json."""
    height, width = model.get_layer("image").output.shape[1:3]
    if height and width:
        return int(height), int(width)
    config_path = model_path.parent / CONFIG_FILENAME
    try:
        return tuple(json.loads(config_path.read_text())["data"]["image_size"])
    except (OSError, ValueError, KeyError) as error:
        raise InputFileError(f"{model_path}: the model takes any image size and "
                             f"{config_path} gives none ({error})") from error


# --- images --------------------------------------------------------------------------------


def read_images(paths, image_size: tuple[int, int], resize: str = "stretch",
                boxes=None) -> np.ndarray:
    """uint8 [N, H, W, 3] decoded and resized as in training; ``boxes`` (float [N, 4], e.g.
    ``lesion_box.estimate_lesion_boxes``' crop boxes) cuts each image to its box first. Every
    file is tried before anything is returned; ``ImageReadError`` names each file that
    failed and why."""
    paths = [Path(path) for path in paths]
    boxes = [None] * len(paths) if boxes is None else np.asarray(boxes, np.float32)
    pixels, problems = [], {}
    for path, box in zip(paths, boxes, strict=True):
        try:
            pixels.append(decode_image_file(path, image_size, resize, box))
        except ImageReadError as error:
            problems.update(error.problems)
    if problems:
        raise ImageReadError(problems)
    return np.stack(pixels)


def decode_image_file(path: Path, image_size: tuple[int, int] | None = None,
                      resize: str = "stretch", box=None) -> np.ndarray:
    """One image as uint8 [H, W, 3]: cut to ``box`` (x0, y0, x1, y1 fractions; None: whole)
    and fitted to ``image_size`` as in training (``resize``: the run's data.resize), or at
    its own size when None. Grey and RGBA images become RGB (the alpha channel is
    dropped)."""
    contents = read_image_bytes(path)
    try:
        if image_size is None:
            image = tf.io.decode_image(contents, channels=3, expand_animations=False)
            image = image if box is None else crop_to_box(image, box)
        else:
            image = decode_image(contents, tuple(image_size), resize, box)
    except tf.errors.OpError as error:
        raise ImageReadError({path: f"not a readable image ({_op_message(error)})"}) from None
    return image.numpy()


def warn_small_images(paths, image_size: tuple[int, int], factor: float = 2.0) -> None:
    """A warning for each image whose height or width is under 1/``factor`` of the model's
    input: it was upsampled that much, and what the model says of it means little."""
    height, width = image_size
    for path in map(Path, paths):
        shape = image_shape(read_image_bytes(path))
        if shape[0] * factor < height or shape[1] * factor < width:
            warnings.warn(f"{path}: {shape[1]}x{shape[0]} pixels, far smaller than the "
                          f"model's {width}x{height} input: upsampled, so its prediction "
                          "means little", stacklevel=2)


def image_shape(contents: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image, from its header for JPEG and PNG."""
    if contents[:8] == b"\x89PNG\r\n\x1a\n" and len(contents) >= 24:
        width, height = struct.unpack(">II", contents[16:24])
        return int(height), int(width)
    if contents[:2] == b"\xff\xd8":
        shape = tf.io.extract_jpeg_shape(contents).numpy()
        return int(shape[0]), int(shape[1])
    shape = tf.io.decode_image(contents, channels=3, expand_animations=False).shape
    return int(shape[0]), int(shape[1])


def read_image_bytes(path: Path) -> bytes:
    """The file's bytes, or ``ImageReadError`` saying why not."""
    if not path.exists():
        raise ImageReadError({path: "no such file"})
    if not path.is_file():
        raise ImageReadError({path: "not a file"})
    try:
        return path.read_bytes()
    except OSError as error:
        raise ImageReadError({path: f"cannot read ({error.strerror})"}) from None


def _op_message(error: tf.errors.OpError) -> str:
    """TensorFlow's reason without its op and device decoration."""
    message = re.sub(r"\{\{.*?\}\}\s*", "", error.message)
    return re.sub(r"\s*\[Op:.*$", "", message, flags=re.DOTALL).strip()


def compute_top_k(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Class indices [N, k], most probable first; ties keep class order."""
    return np.argsort(-np.asarray(probabilities), axis=-1, kind="stable")[..., :k]


# --- clinical data -------------------------------------------------------------------------


def make_clinical_rows(count: int, age, sex: str, site: str) -> pd.DataFrame:
    """``count`` identical, validated clinical rows (one per image)."""
    row = check_clinical_rows(pd.DataFrame([{"age": age, "sex": sex, "localization": site}]),
                              labels=[""])
    return row.loc[[0] * count].reset_index(drop=True)


def read_clinical_csv(path: Path, images: list[Path]) -> pd.DataFrame:
    """The validated rows of a CSV (columns image,age,sex,localization) for ``images``, in
    their order. A row's ``image`` matches an image given as that path, by file name, or
    by file name without extension (a HAM10000 image_id)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise InputFileError(f"{path}: cannot read the clinical CSV ({error})") from error
    missing = [column for column in CSV_COLUMNS if column not in table.columns]
    if missing:
        raise ClinicalInputError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                                 f"{','.join(CSV_COLUMNS)}")
    rows = [_match_row(table, image, path) for image in images]
    frame = table.loc[rows, list(CLINICAL_COLUMNS)].reset_index(drop=True)
    return check_clinical_rows(frame, labels=[str(image) for image in images])


def _match_row(table: pd.DataFrame, image: Path, csv_path: Path):
    given = table["image"].str.strip()
    for matches in (given.map(Path) == image,
                    given.map(lambda value: Path(value).name) == image.name,
                    given == image.stem):
        if matches.sum() == 1:
            return matches.idxmax()
        if matches.sum() > 1:
            raise ClinicalInputError(f"{csv_path}: several rows match image {image}")
    raise ClinicalInputError(f"{csv_path}: no row for image {image}")


def check_clinical_rows(frame: pd.DataFrame, labels=None) -> pd.DataFrame:
    """Normalised rows (age float, NaN when unknown; sex and localization lower case), or
    ``ClinicalInputError`` listing every invalid value; ``labels`` name the rows in it
    (default "row 1", "row 2", ...; "" names none)."""
    missing = [column for column in CLINICAL_COLUMNS if column not in frame.columns]
    if missing:
        raise ClinicalInputError(f"clinical rows lack column(s) {', '.join(missing)}")
    if labels is None:
        labels = [f"row {index + 1}" for index in range(len(frame))]
    ages, sexes, sites, problems = [], [], [], []
    for label, age, sex, site in zip(labels, frame["age"], frame["sex"], frame["localization"]):
        ages.append(_parse_age(age, label, problems))
        sexes.append(_parse_word(sex, SEXES, "sex", label, problems))
        sites.append(_parse_word(site, LOCALIZATIONS, "site", label, problems))
    if problems:
        raise ClinicalInputError("; ".join(problems))
    return pd.DataFrame({"age": ages, "sex": sexes, "localization": sites})


def _parse_age(value, label: str, problems: list[str]) -> float:
    text = "" if value is None else str(value).strip().lower()
    if text in ("", "unknown", "nan"):
        return math.nan
    low, high = AGE_RANGE
    try:
        age = float(text)
    except ValueError:
        age = math.nan
    if not low <= age <= high:  # also rejects NaN from a non-number
        problems.append(f"{_prefix(label)}age {value!r} is not a number from {low:g} to "
                        f"{high:g} or 'unknown'")
    return age


def _parse_word(value, vocabulary: tuple[str, ...], field: str, label: str,
                problems: list[str]) -> str:
    # "lower_extremity" and "Lower  Extremity" both mean "lower extremity".
    text = " ".join(str(value if value is not None else "").replace("_", " ").lower().split())
    text = text or "unknown"
    if text not in vocabulary:
        problems.append(f"{_prefix(label)}{field} {value!r} is not one of "
                        f"{', '.join(vocabulary)}")
    return text


def _prefix(label: str) -> str:
    return f"{label}: " if label else ""
