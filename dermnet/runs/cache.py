"""Where generated data lives: the phantom datasets are made once per machine, here."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$DERMNET_CACHE`` or ``~/.cache/dermnet``: where the phantom datasets are generated."""
    return Path(os.environ.get("DERMNET_CACHE") or Path.home() / ".cache" / "dermnet")
