"""Grids of runs: the first study's 8 backbones x 2 resolutions x clinical on/off x 5 folds.

Each grid entry is an independent ``dermnet-train`` command (``python train.py`` in a
checkout) with its own run directory, so the list can run in sequence, in parallel, or go to
a cluster scheduler; each entry resumes when interrupted and is skipped once finished.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

RESOLUTIONS = {"low": (224, 300), "high": (450, 600)}
# The study's eight networks (the registry also holds others, such as the ResNet18 family).
PAPER_BACKBONES = ("resnet34", "resnet50", "resnet101", "seresnet50", "vgg16", "vgg19",
                   "efficientnetb5", "mobilenet")


@dataclasses.dataclass(frozen=True)
class GridEntry:
    backbone: str
    resolution: str          # "low" or "high"
    clinical: bool
    fold: int
    out: Path                # the entry's run directory

    def arguments(self, preset: str, extra: tuple[str, ...] = ()) -> list[str]:
        """dermnet-train arguments of this entry."""
        return ["--preset", preset, "--backbone", self.backbone, "--resolution",
                self.resolution, "--clinical" if self.clinical else "--no-clinical",
                "--fold", str(self.fold), "--out", str(self.out), *extra]

    def command(self, preset: str, extra: tuple[str, ...] = ()) -> str:
        """The entry as one shell command (the installed ``dermnet-train``)."""
        return shlex.join(["dermnet-train", *self.arguments(preset, extra)])


def make_grid(name: str, out_root: str | Path, folds: int = 5) -> list[GridEntry]:
    """The entries of grid ``name`` under ``out_root`` (``paper``: 8 x 2 x 2 x folds)."""
    if name != "paper":
        raise ValueError(f"unknown grid {name!r}; valid: paper")
    out_root = Path(out_root)
    return [
        GridEntry(backbone, resolution, clinical, fold,
                  out_root / f"{backbone}-{resolution}-{'clinical' if clinical else 'image'}"
                  / f"fold-{fold}")
        for backbone in PAPER_BACKBONES
        for resolution in RESOLUTIONS
        for clinical in (False, True)
        for fold in range(folds)
    ]
