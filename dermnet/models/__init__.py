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


class ModelFileError(ValueError):
    """A model file that cannot be used: missing, damaged, or refused by safe_mode."""


def load_model(path, **options) -> keras.Model:
    """Load a dermnet ``model.keras`` for inference (no optimizer state is compiled), with
    Keras's ``safe_mode`` on: a file that would run code (a lambda, a function such as
    ``os.system`` named in its config) is refused. Any failure is one ``ModelFileError``
    naming the file; Keras raises many kinds (zip, JSON, key, type errors) for a file that is
    not a usable model, and each means the same to the user."""
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True, **options)
    except Exception as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        if len(reason) > 300:
            reason = reason[:300] + " ..."
        raise ModelFileError(f"{path}: cannot load the model ({reason})") from error
