"""The name a command was started by, for its usage lines and messages."""

from __future__ import annotations

import sys
from pathlib import Path


def program_name(default: str) -> str:
    """``dermnet-train`` (and the other console scripts) when the user typed one, else
    ``default``, the form a checkout uses (``train.py``, ``python -m gan``)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("dermnet-") else default
