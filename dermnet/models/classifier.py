"""The classifier: raw pixels (+ clinical vector) -> class probabilities, any backbone.

    image (H, W, 3) 0-255 -> [ShadesOfGray] -> PixelPreprocessing -> backbone -> pooling
                                                                                   |
    clinical (F,) -> clinical branch (optional) ----------------------------> Concatenate
                                                                                   |
                                                        Dropout(0.5, as in the paper) -> Dense

Inputs are named ``image`` and ``clinical``; the output is named ``probabilities`` (softmax,
the default) or ``logits``. Also: helpers for two-phase fine-tuning.
"""

from __future__ import annotations

import os

import keras

from dermnet.models.backbones import get_backbone
from dermnet.models.clinical_branch import build_clinical_branch
from dermnet.models.colour import ShadesOfGray
from dermnet.models.preprocessing import PixelPreprocessing
from dermnet.models.registry import BackboneSpec

OUTPUTS = ("probabilities", "logits")


def build_classifier(backbone: str, image_shape=(224, 300), num_classes: int = 7,
                     clinical_features: int | None = None, weights=None,
                     dropout: float = 0.5, clinical_units=(64,), clinical_dropout: float = 0.25,
                     clinical_mask_rate: float = 0.0, output: str = "probabilities",
                     name: str | None = None, colour_constancy: str = "none") -> keras.Model:
    """A functional classifier over the registered ``backbone``.

    ``image_shape`` is (H, W) or (H, W, 3); ``weights`` is None, a name the backbone lists
    (``"imagenet"``) or a weights file for the headless backbone; ``clinical_features`` is the
    clinical vector length, or None for an image-only model; ``colour_constancy`` is "none"
    or "shades_of_gray" (``dermnet.models.colour``).
    """
    spec = get_backbone(backbone)
    shape = _check_image_shape(spec, image_shape)
    _check_weights(spec, weights)
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    image = keras.Input(shape=shape, name="image")
    pixels = _colour_layer(colour_constancy)(image)
    pixels = PixelPreprocessing(spec.preprocessing, name="preprocessing")(pixels)
    features = spec.build(shape, weights=weights)(pixels)
    features = keras.layers.GlobalAveragePooling2D(name="pooling")(features)
    inputs = {"image": image}
    if clinical_features:
        clinical = keras.Input(shape=(clinical_features,), name="clinical")
        inputs["clinical"] = clinical
        branch = build_clinical_branch(clinical, clinical_units, clinical_dropout,
                                       clinical_mask_rate)
        features = keras.layers.Concatenate(name="fusion")([features, branch])
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    activation = "softmax" if output == "probabilities" else None
    # float32 output keeps softmax and the loss stable under mixed precision.
    outputs = keras.layers.Dense(num_classes, activation=activation, dtype="float32",
                                 name=output)(features)
    model_name = name or f"{backbone}_{'clinical' if clinical_features else 'image'}"
    return keras.Model(inputs, outputs, name=model_name)


def _colour_layer(colour_constancy: str):
    if colour_constancy == "shades_of_gray":
        return ShadesOfGray(name="colour_constancy")
    if colour_constancy != "none":
        raise ValueError(f"colour_constancy must be 'none' or 'shades_of_gray', got "
                         f"{colour_constancy!r}")
    return lambda images: images


def _check_image_shape(spec: BackboneSpec, image_shape) -> tuple[int, int, int]:
    shape = tuple(int(side) for side in image_shape)
    if len(shape) == 2:
        shape = (*shape, 3)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"image_shape must be (H, W) or (H, W, 3), got {image_shape}")
    if min(shape[:2]) < spec.min_size:
        raise ValueError(f"{spec.name} needs images of at least {spec.min_size}x{spec.min_size}"
                         f" pixels, got {shape[0]}x{shape[1]}")
    return shape


def _check_weights(spec: BackboneSpec, weights) -> None:
    if weights is None or weights in spec.weights:
        return
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return
    raise ValueError(f"weights for {spec.name} must be None, one of {list(spec.weights)} or an "
                     f"existing weights file; got {str(weights)!r}")


def get_backbone_model(model: keras.Model) -> keras.Model:
    """The backbone network nested inside a classifier built by ``build_classifier``."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"{model.name}: expected one nested backbone, found {len(nested)}")
    return nested[0]


def walk_layers(model: keras.Model):
    """Every layer of ``model``, descending into nested models (the backbone)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> None:
    """Set the moving-statistics momentum of every BatchNormalization, backbone included."""
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def set_batchnorm_synchronized(model: keras.Model, synchronized: bool) -> None:
    """Compute every BatchNormalization's batch statistics over the global batch of all
    replicas (SyncBatchNorm; TensorFlow backend only). Training-time only: the attribute is
    read when the train step is traced, and saved inference models are rebuilt without it,
    so they still load under every backend."""
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = synchronized


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1 of transfer learning: train only the head (and clinical branch)."""
    get_backbone_model(model).trainable = False


def unfreeze_top(model: keras.Model, fraction: float = 0.3) -> int:
    """Phase 2: make the top ``fraction`` of the backbone's weighted layers trainable.

    Batch normalisation stays frozen (in inference mode), so small fine-tuning batches do
    not overwrite the ImageNet statistics. Returns the number of layers unfrozen.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    backbone = get_backbone_model(model)
    backbone.trainable = True
    weighted = [layer for layer in backbone.layers if layer.weights]
    first = len(weighted) - max(1, round(fraction * len(weighted)))
    unfrozen = 0
    for index, layer in enumerate(weighted):
        is_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first and not is_norm
        unfrozen += int(layer.trainable)
    return unfrozen
