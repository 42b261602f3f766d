"""Shared fixtures: the real HAM10000 metadata and images when CI exposes them, quiet
TensorFlow."""

import os
from pathlib import Path

import pytest

# Quiet TensorFlow's C++ start-up logging; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def real_metadata_path() -> Path:
    """Path of the real HAM10000_metadata.csv (set by .ci/run); skips when unavailable."""
    value = os.environ.get("DERMNET_HAM10000_METADATA")
    if not value or not Path(value).is_file():
        pytest.skip("DERMNET_HAM10000_METADATA does not point at the real metadata CSV")
    return Path(value)


@pytest.fixture(scope="session")
def real_dataset() -> Path:
    """The real 200x150 HAM10000 folder with its masks (DERMNET_HAM10000_IMAGES, set by
    .ci/run; its images/ folder is accepted too); skips when unavailable."""
    value = os.environ.get("DERMNET_HAM10000_IMAGES")
    folder = Path(value) if value else None
    if folder is not None and folder.name == "images":
        folder = folder.parent
    if folder is None or not (folder / "masks").is_dir() or not (
            folder / "HAM10000_metadata.csv").is_file():
        pytest.skip("DERMNET_HAM10000_IMAGES does not name the real dataset with its masks")
    return folder
