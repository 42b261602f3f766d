"""The four VGG16 variants of study 2 with one sigmoid output per binary task. Their masked
loss and metrics, which let every image train only the tasks its diagnosis belongs to, are
in ``dermnet.models.losses`` and ``dermnet.models.metrics``.

    image 0-255 -> caffe preprocessing -> [SpatialTransformer: ps, ns] -> VGG16 trunk
      -> GlobalAveragePooling -> Dense 64 ReLU (L2) -> Dropout 0.5
      -> per task: Dense 32 ReLU (L2) -> Dense 1 sigmoid  -> Concatenate -> "tasks" [B, T]

Labels are [B, T] with 1 / 0 for the two diagnoses of a task and -1 where the image takes no
part in it (an eczema image is labelled in psoriasis-vs-eczema and CTCL-vs-eczema, an acne
image only in acne-vs-rosacea). Settings follow the original study's training code.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from dermnet.models.backbones import get_backbone
from dermnet.models.preprocessing import PixelPreprocessing
from dermnet.models.spatial_transformer import SpatialTransformer

TASKS = ("psoriasis_vs_eczema", "acne_vs_rosacea", "ctcl_vs_eczema")

# keras.applications.VGG16(include_top=False).layers: 0 input, 1-3 block1 (2 conv + pool),
# 4-6 block2, 7-10 block3 (3 conv + pool), 11-14 block4, 15-18 block5. The original code froze
# layers 0-14 (`i < 15`): blocks 1-4 frozen (10 convs, 7,635,264 weights), block 5 fine-tuned
# (3 convs, 7,079,424 weights). The paper's "conv layers frozen" is frozen_layers=19.
ORIGINAL_FROZEN_LAYERS = 15
DEFAULT_WEIGHTS = "variant"  # ImageNet for the pretrained variants, None for the others


@dataclass(frozen=True)
class Variant:
    pretrained: bool           # ImageNet weights, frozen lower layers
    spatial_transformer: bool  # a SpatialTransformer in front of the trunk
    description: str


VARIANTS = {
    "p": Variant(True, False, "VGG16-P: ImageNet weights, conv blocks 1-4 frozen"),
    "n": Variant(False, False, "VGG16-N: trained from scratch"),
    "ps": Variant(True, True, "VGG16-PS: VGG16-P with a spatial transformer in front"),
    "ns": Variant(False, True, "VGG16-NS: VGG16-N with a spatial transformer in front"),
}


def build_multitask_vgg16(variant: str,
                          image_size=(250, 250),        # original: 250x250 photographs
                          task_names=TASKS,             # one sigmoid output per binary task
                          weights=DEFAULT_WEIGHTS,      # "variant", None, "imagenet" or a file
                          frozen_layers: int | None = None,  # None: 15 for p/ps, 0 for n/ns
                          units: int = 64,              # shared head width (original fc1)
                          task_units: int = 32,         # per-task hidden width (original fc*1)
                          l2: float = 5e-4,             # original kernel regulariser
                          dropout: float = 0.5,
                          localization_size=(150, 150),  # STN's view of the image
                          transformer_output_size=None,  # None: image_size (original: 224)
                          allow_shear: bool = False,
                          name: str | None = None) -> keras.Model:
    """The VGG16 ``variant`` ("p", "n", "ps", "ns") over named input ``image`` (RGB 0-255);
    one output ``tasks`` [B, len(task_names)] of per-task sigmoid probabilities."""
    spec = _variant(variant)
    weights = _resolve_weights(variant, spec, weights)
    if frozen_layers is None:
        frozen_layers = ORIGINAL_FROZEN_LAYERS if spec.pretrained else 0
    shape = (*(int(side) for side in image_size), 3)
    image = keras.Input(shape=shape, name="image")
    pixels = PixelPreprocessing("caffe", name="preprocessing")(image)
    if spec.spatial_transformer:
        pixels = SpatialTransformer(localization_size, allow_shear=allow_shear,
                                    output_size=transformer_output_size,
                                    name="spatial_transformer")(pixels)
    trunk = get_backbone("vgg16").build(pixels.shape[1:], weights=weights)
    freeze_layers(trunk, frozen_layers)
    features = keras.layers.GlobalAveragePooling2D(name="pooling")(trunk(pixels))
    outputs = build_task_heads(features, task_names, units, task_units, l2, dropout)
    return keras.Model({"image": image}, outputs, name=name or f"vgg16_{variant}_multitask")


def _variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def _resolve_weights(variant: str, spec: Variant, weights):
    if weights == DEFAULT_WEIGHTS:
        return "imagenet" if spec.pretrained else None
    if weights is not None and not spec.pretrained:
        raise ValueError(f"variant {variant!r} trains from scratch; weights must be None, "
                         f"got {weights!r}")
    return weights


def freeze_layers(model: keras.Model, count: int) -> None:
    """Freeze ``model.layers[:count]`` (the input layer counts, as in the original code)."""
    if not 0 <= count <= len(model.layers):
        raise ValueError(f"frozen_layers must be in [0, {len(model.layers)}], got {count}")
    for layer in model.layers[:count]:
        layer.trainable = False


def build_task_heads(features, task_names, units: int, task_units: int, l2: float,
                     dropout: float):
    """Shared Dense + Dropout, then one Dense -> Dense(1, sigmoid) branch per task, each named
    after its task; returns the concatenated probabilities [B, T] named ``tasks``."""
    regulariser = keras.regularizers.L2(l2)
    shared = keras.layers.Dense(units, activation="relu", kernel_regularizer=regulariser,
                                name="head_dense")(features)
    shared = keras.layers.Dropout(dropout, name="head_dropout")(shared)
    probabilities = []
    for task in task_names:
        hidden = keras.layers.Dense(task_units, activation="relu", kernel_regularizer=regulariser,
                                    name=f"{task}_dense")(shared)
        # float32 keeps the sigmoid and the loss stable under mixed precision.
        probabilities.append(keras.layers.Dense(1, activation="sigmoid", dtype="float32",
                                                name=task)(hidden))
    return keras.layers.Concatenate(name="tasks", dtype="float32")(probabilities)
