"""Helpers of the tests that train and score a smoke run (fixtures in tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The smoke preset (2 epochs of a small MobileNet) on 120 phantom images.
SMOKE = ["--preset", "smoke", "--deterministic", "--set", "data.phantom_images=120"]

def run_script(script: str, arguments, cache_dir: Path | None = None, env: dict | None = None,
               timeout: int = 900, **options) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGUMENTS`` (train.py, evaluate.py, predict.py) in the checkout, with
    its phantom data cached in ``cache_dir``; output captured as text."""
    environment = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"} | (env or {})
    if cache_dir is not None:
        environment["DERMNET_CACHE"] = str(cache_dir)
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, arguments)],
                          env=environment, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, **options)


@dataclasses.dataclass(frozen=True)
class SmokeRun:
    out: Path                                # the finished run directory
    result: subprocess.CompletedProcess      # train.py's exit status and output
    phantom: Path                            # the phantom dataset it trained on
    cache: Path                              # the DERMNET_CACHE holding that dataset


def copy_run(run: Path, target: Path) -> Path:
    """A private copy of a finished run directory (its lock file left behind)."""
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(".lock"))
    return target
