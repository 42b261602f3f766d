"""Shared fixtures: the real HAM10000 metadata when CI exposes it, quiet TensorFlow."""

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
