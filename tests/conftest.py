"""Shared fixtures: the real HAM10000 metadata and images when CI exposes them, quiet
TensorFlow, and the clinical smoke run that several test files score, trained once per
session."""

import os
from pathlib import Path

import pytest

from tests.smoke import SMOKE, SmokeRun, run_script

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


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One DERMNET_CACHE for the session's phantom datasets (each made once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def trained_smoke_run(tmp_path_factory, session_cache) -> SmokeRun:
    """``train.py`` with SMOKE and ``--clinical``, trained once per session. Tests that write
    into a run directory take a copy (``copy_run``), never this folder."""
    out = tmp_path_factory.mktemp("session-runs") / "smoke"
    result = run_script("train.py", [*SMOKE, "--clinical", "--out", out], session_cache)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (phantom,) = session_cache.glob("phantom-*-120-*")
    return SmokeRun(out, result, phantom, session_cache)
