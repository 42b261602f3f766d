"""How the non-skin filter is trained (``preprocess.skin_filter`` does it in Keras); apart
from the Keras code so that ``python -m preprocess filter --help`` answers at once."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How the filter is trained; saved in skin_filter.json next to the model."""

    image_size: tuple[int, int] = (128, 128)  # (height, width) of the model input
    epochs: int = 30                # upper bound; early stopping usually ends sooner
    batch_size: int = 32
    validation_fraction: float = 0.2  # of each class, held out with a fixed seed
    patience: int = 5               # epochs without a better validation loss before stopping
    learning_rate: float = 1e-3     # Adam; a small network from scratch tolerates a large step
    seed: int = 0
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels of the conv blocks
