"""Model builders: backbone registry, ResNet18/34 / SE-ResNet50 built here, the classifier with
its clinical branch and colour constancy, the spatial transformer and multi-task heads.

This package imports ``keras`` only (never ``tensorflow``), so every model builds under the
TensorFlow, JAX and PyTorch backends of Keras 3.
"""

import keras

# Importing the package registers dermnet's custom layers with Keras's serialisation, so a
# saved model.keras loads after ``import dermnet.models`` (safe_mode stays on).
from dermnet.models import (  # noqa: E402,F401
    clinical_branch,
    colour,
    multitask,
    preprocessing,
    spatial_transformer,
)


def load_model(path) -> keras.Model:
    """Load a dermnet ``model.keras`` for inference (no optimizer state is compiled)."""
    return keras.saving.load_model(path, compile=False, safe_mode=True)
