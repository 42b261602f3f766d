"""Progressive growing as a pure function of the number of training images seen.

A schedule grows from ``start_resolution`` to ``final_resolution``, doubling each time. The
first resolution has one stable phase; every later one has a fade phase (the new block is
blended in, its weight alpha rising linearly from 0 to 1) and then a stable phase (alpha =
1), each ``images_per_phase`` images long, as in Karras et al. 2018 (600k + 600k):

    4 stable | 8 fade | 8 stable | 16 fade | ... | 512 fade | 512 stable -> 512 stable forever

Training may go on past ``total_images``: it stays in the final stable phase. The batch
size belongs to the resolution being trained or faded in (as in the official code), and the
learning rate decays exponentially with the images seen (see ``compute_learning_rate``).
Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

FADE, STABLE = "fade", "stable"

# The paper (section 2.4) gives only the endpoints, 128 at 4x4 and 2 at 512x512; halving
# from 16x16 on is our interpolation between them.
PAPER_BATCH_SIZES = {4: 128, 8: 128, 16: 64, 32: 32, 64: 16, 128: 8, 256: 4, 512: 2}
# Karras et al.'s official config for a 16 GB GPU (progressive_growing_of_gans, config.py).
KARRAS_BATCH_SIZES = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4}


def _is_power_of_two(value) -> bool:
    return isinstance(value, int) and value >= 1 and value & (value - 1) == 0


@dataclass(frozen=True)
class GrowthSchedule:
    start_resolution: int = 4            # side of the first block's images (4x4)
    final_resolution: int = 512          # side of the last block's images (8 blocks: 4..512)
    images_per_phase: int = 600_000      # images per fade and per stable phase (Karras: 600k)
    # Batch size per resolution, every resolution from start to final; JSON's string keys
    # ("4": 128) are accepted and turned back into ints.
    batch_sizes: dict[int, int] = field(default_factory=lambda: dict(PAPER_BATCH_SIZES),
                                        hash=False)
    learning_rate: float = 0.0075        # Adam's initial rate (paper; Karras used 0.001)
    lr_decay: float = 0.99               # factor per decay_every_images (1.0: constant rate)
    decay_every_images: int = 100_000    # the paper does not say; ours: ~10 HAM10000 epochs

    def __post_init__(self):
        object.__setattr__(self, "batch_sizes",
                           {int(key): value for key, value in self.batch_sizes.items()})
        check_schedule(self)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Every resolution trained, smallest first."""
        steps = int(math.log2(self.final_resolution // self.start_resolution))
        return tuple(self.start_resolution * 2**step for step in range(steps + 1))


def check_schedule(schedule: GrowthSchedule) -> None:
    """Raise ValueError naming the first thing wrong with ``schedule``."""
    start, final = schedule.start_resolution, schedule.final_resolution
    for name, value in (("start_resolution", start), ("final_resolution", final)):
        if not _is_power_of_two(value) or value < 2:
            raise ValueError(f"GrowthSchedule.{name} must be a power of two >= 2, got {value}")
    if final < start:
        raise ValueError(f"GrowthSchedule.final_resolution ({final}) is smaller than "
                         f"start_resolution ({start})")
    missing = [size for size in schedule.resolutions if size not in schedule.batch_sizes]
    if missing:
        raise ValueError(f"GrowthSchedule.batch_sizes has no batch size for resolution(s) "
                         f"{missing}")
    if any(not isinstance(size, int) or size < 1 for size in schedule.batch_sizes.values()):
        raise ValueError(f"GrowthSchedule.batch_sizes must be positive integers, got "
                         f"{schedule.batch_sizes}")
    if schedule.images_per_phase < 1 or schedule.decay_every_images < 1:
        raise ValueError("GrowthSchedule.images_per_phase and decay_every_images must be "
                         "positive")
    if not 0.0 < schedule.lr_decay <= 1.0 or schedule.learning_rate <= 0.0:
        raise ValueError("GrowthSchedule.lr_decay must be in (0, 1] and learning_rate "
                         "positive")


class Boundary(NamedTuple):
    start: int        # images seen when this phase begins
    resolution: int   # side of the images trained in it
    phase: str        # FADE or STABLE


@dataclass(frozen=True)
class Stage:
    resolution: int        # side of the images the networks work at now
    fade_in: float         # weight of the newest block: rises 0 -> 1 during a fade, else 1
    phase: str             # FADE or STABLE
    batch_size: int        # batch size of this resolution
    stage_index: int       # position in stage_boundaries(): 0 = first stable phase
    learning_rate: float   # decayed Adam learning rate at this point


def stage_boundaries(schedule: GrowthSchedule) -> list[Boundary]:
    """Every phase in order, with the number of images seen when it starts."""
    phases = [(schedule.start_resolution, STABLE)]
    for resolution in schedule.resolutions[1:]:
        phases += [(resolution, FADE), (resolution, STABLE)]
    return [Boundary(index * schedule.images_per_phase, resolution, phase)
            for index, (resolution, phase) in enumerate(phases)]


def total_images(schedule: GrowthSchedule) -> int:
    """Images seen when the final resolution's stable phase ends (growth is then complete)."""
    return len(stage_boundaries(schedule)) * schedule.images_per_phase


def compute_learning_rate(schedule: GrowthSchedule, images_seen: int) -> float:
    """learning_rate * lr_decay ** (images_seen / decay_every_images).

    "Exponential decay 0.99" read as Keras' ``ExponentialDecay(decay_rate=0.99)`` without
    staircase, counted in images rather than optimizer steps because the batch size (and so
    the number of steps per image) changes with resolution.
    """
    exponent = max(images_seen, 0) / schedule.decay_every_images
    return schedule.learning_rate * schedule.lr_decay**exponent


def schedule_at(schedule: GrowthSchedule, images_seen: int) -> Stage:
    """Where training stands after ``images_seen`` images (negative counts as 0)."""
    boundaries = stage_boundaries(schedule)
    images_seen = max(int(images_seen), 0)  # a NumPy or tensor count works too
    index = min(images_seen // schedule.images_per_phase, len(boundaries) - 1)
    boundary = boundaries[index]
    fade_in = 1.0
    if boundary.phase == FADE:  # never the last phase, so images_seen is inside it
        fade_in = (images_seen - boundary.start) / schedule.images_per_phase
    return Stage(resolution=boundary.resolution, fade_in=fade_in, phase=boundary.phase,
                 batch_size=schedule.batch_sizes[boundary.resolution], stage_index=index,
                 learning_rate=compute_learning_rate(schedule, images_seen))


def paper_schedule() -> GrowthSchedule:
    """Study 1: 8 blocks 4..512, batch 128 -> 2, Adam lr 0.0075 decaying by 0.99."""
    return GrowthSchedule()


def karras_schedule() -> GrowthSchedule:
    """Karras et al.'s defaults up to 512x512: lr 0.001, constant; their batch sizes."""
    return GrowthSchedule(batch_sizes=dict(KARRAS_BATCH_SIZES), learning_rate=0.001,
                          lr_decay=1.0)


def smoke_schedule(final_resolution: int = 32) -> GrowthSchedule:
    """A few CPU steps per phase for tests and demos on the phantom dataset (4..32)."""
    sizes = {4: 8, 8: 8, 16: 4, 32: 4, 64: 2, 128: 2, 256: 2, 512: 2}
    return GrowthSchedule(final_resolution=final_resolution, images_per_phase=16,
                          batch_sizes={size: batch for size, batch in sizes.items()
                                       if size <= final_resolution},
                          learning_rate=0.001, decay_every_images=100)


SCHEDULE_PRESETS = {"paper": paper_schedule, "karras": karras_schedule,
                    "smoke": smoke_schedule}


def make_schedule(name: str) -> GrowthSchedule:
    """A preset by name: 'paper', 'karras' or 'smoke'."""
    if name not in SCHEDULE_PRESETS:
        raise ValueError(f"unknown growth schedule {name!r}; choose from "
                         f"{', '.join(SCHEDULE_PRESETS)}")
    return SCHEDULE_PRESETS[name]()


@dataclass(frozen=True)
class StagePlan:
    """One stage of a run: a resolution, stable or fading in, trained to ``end`` images."""

    index: int          # position in stage_boundaries()
    resolution: int
    fade: bool          # a new block fades in
    batch_size: int     # global batch size
    end: int            # images seen when the stage ends

    @property
    def name(self) -> str:
        return f"{self.resolution}x{self.resolution} {'fade' if self.fade else 'stable'}"


def plan_stages(schedule: GrowthSchedule) -> list[StagePlan]:
    """The stages of ``schedule`` in training order."""
    boundaries = stage_boundaries(schedule)
    ends = [boundary.start for boundary in boundaries[1:]] + [total_images(schedule)]
    return [StagePlan(index, boundary.resolution, boundary.phase == FADE,
                      schedule.batch_sizes[boundary.resolution], end)
            for index, (boundary, end) in enumerate(zip(boundaries, ends))]
