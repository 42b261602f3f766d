"""Shared fixtures of the inference tests: small saved models (image-only and clinical, as
run directories) and image files of several kinds, sizes and states of repair."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

MODEL_SIZE = (32, 40)  # (H, W): the smallest MobileNet input, for speed


def save_model_dir(directory: Path, clinical: bool) -> Path:
    """A run-directory-like folder: model.keras (and clinical_encoding.json)."""
    from dermnet.data.clinical import fit_clinical_encoder
    from dermnet.models.classifier import build_classifier

    encoder = fit_clinical_encoder(pd.DataFrame({"age": [30, 50, 70]}))
    model = build_classifier("mobilenet", MODEL_SIZE, num_classes=7,
                             clinical_features=encoder.num_features if clinical else None)
    directory.mkdir(parents=True)
    model.save(directory / "model.keras")
    if clinical:
        encoder.save_json(directory / "clinical_encoding.json")
    return directory


@pytest.fixture(scope="session")
def image_run(tmp_path_factory) -> Path:
    return save_model_dir(tmp_path_factory.mktemp("models") / "image", clinical=False)


@pytest.fixture(scope="session")
def clinical_run(tmp_path_factory) -> Path:
    return save_model_dir(tmp_path_factory.mktemp("models") / "clinical", clinical=True)


def make_lesion(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth RGB uint8 image with a dark blob (JPEG-friendly, not noise)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    centre = rng.uniform(0.3, 0.7, 2) * (height, width)
    distance = np.hypot(rows - centre[0], columns - centre[1]) / min(height, width)
    skin = rng.uniform(150, 230, 3)
    shade = np.clip(1.0 - 0.8 * np.exp(-(distance / 0.2) ** 2), 0.0, 1.0)
    return np.round(skin * shade[..., None]).astype(np.uint8)


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    """Image files by kind: jpeg (450x600), png (97x131), grey and rgba (the png's green
    channel, and the png with an alpha channel), text (not an image), truncated (half a
    JPEG), missing (no file)."""
    folder = tmp_path_factory.mktemp("images")
    paths = {name: folder / file for name, file in (
        ("jpeg", "lesion.jpg"), ("png", "small.png"), ("grey", "grey.png"),
        ("rgba", "rgba.png"), ("text", "notes.jpg"),
        ("truncated", "truncated.jpg"), ("missing", "missing.jpg"))}
    rgb = make_lesion(450, 600, seed=1)
    cv2.imwrite(str(paths["jpeg"]), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    small = make_lesion(97, 131, seed=2)
    cv2.imwrite(str(paths["png"]), small[..., ::-1])
    cv2.imwrite(str(paths["grey"]), small[..., 1])
    alpha = np.full(small.shape[:2], 77, np.uint8)
    cv2.imwrite(str(paths["rgba"]), np.dstack([small[..., ::-1], alpha]))
    paths["text"].write_text("age,sex\n45,male\n")
    contents = paths["jpeg"].read_bytes()
    paths["truncated"].write_bytes(contents[: len(contents) // 2])
    return paths
