"""ResNet18 and ResNet34 (He et al. 2016, torchvision ``resnet18`` / ``resnet34``), the
half-width ResNet18 that trains from scratch on a CPU, and the ResNet skeleton they share with
SE-ResNet50: stem, stage loop, head and the loading of converted ImageNet weights.

The layers mirror PyTorch exactly so that weights converted from torchvision / timm checkpoints
(``python -m dermnet.models.convert``) reproduce the torch logits:

- every layer is named after its torch module with dots turned into underscores
  (``layer1.0.conv1`` -> ``layer1_0_conv1``), so conversion is a name mapping;
- strided convolutions get an explicit ``ZeroPadding2D`` and ``padding="valid"``: torch pads
  symmetrically, Keras ``"same"`` with stride 2 pads only bottom/right;
- batch norm uses torch's epsilon 1e-5 (Keras defaults to 1e-3) and momentum 0.9 (torch 0.1);
- convolutions have no bias.

The networks take raw float inputs: ImageNet weights converted from torch expect torch-style
pixel preprocessing (``IMAGENET_PREPROCESSING``), which the caller puts in front of the model.

``weights="imagenet"`` reads converted files from ``weights_cache_dir()``:
``$DERMNET_WEIGHTS_DIR`` if set, else ``$KERAS_HOME/dermnet`` (``~/.keras/dermnet``). File names
are ``{architecture}_imagenet.weights.h5`` (with the 1000-class ``fc`` top) and
``{architecture}_imagenet_notop.weights.h5`` (headless). A headless model loads either file: the
Keras weights file keys layers by type and order, and the top ``fc`` is the last ``Dense``, so
the unused top is skipped. A model with a top needs the full file.
"""

import os
from pathlib import Path

import keras

BATCH_NORM_EPSILON = 1e-5  # torch nn.BatchNorm2d default; Keras defaults to 1e-3
BATCH_NORM_MOMENTUM = 0.9  # Keras momentum = 1 - torch momentum (0.1)
STAGE_WIDTHS = (64, 128, 256, 512)  # block width of layer1..layer4
STAGE_STRIDES = (1, 2, 2, 2)  # layer1 follows the stem's max pool, so it keeps the resolution
IMAGENET_CLASSES = 1000
# keras.applications.imagenet_utils.preprocess_input mode the torch ImageNet weights expect:
# x / 255, then minus mean (0.485, 0.456, 0.406) and divided by std (0.229, 0.224, 0.225).
IMAGENET_PREPROCESSING = "torch"

CHECKPOINT_SOURCES = {
    "resnet18": "torchvision https://download.pytorch.org/models/resnet18-f37072fd.pth "
    "or timm https://huggingface.co/timm/resnet18.a1_in1k (model.safetensors)",
    "resnet34": "torchvision https://download.pytorch.org/models/resnet34-b627a593.pth "
    "or timm https://huggingface.co/timm/resnet34.a1_in1k (model.safetensors)",
    "seresnet50": "timm https://huggingface.co/timm/seresnet50.a1_in1k (model.safetensors)",
}


def conv_initializer() -> keras.initializers.Initializer:
    """torchvision's ResNet init: kaiming normal, fan_out, ReLU gain (a fresh object per layer)."""
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def conv_bn(x, filters: int, kernel_size: int, strides: int, conv_name: str, bn_name: str):
    """Conv2D (no bias) + BatchNorm with torch's symmetric padding ``kernel_size // 2``."""
    # Stride 1 with an odd kernel: Keras "same" pads symmetrically, exactly as torch does.
    padding = "same" if kernel_size > 1 else "valid"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{conv_name}_pad")(x)
        padding = "valid"
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,  # the batch norm's beta is the bias
        kernel_initializer=conv_initializer(),
        name=conv_name,
    )(x)
    return batch_norm(x, bn_name)


def batch_norm(x, name: str):
    """BatchNormalization with torch's epsilon and momentum."""
    return keras.layers.BatchNormalization(
        epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=name
    )(x)


def build_stem(x, width: int = STAGE_WIDTHS[0]):
    """conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2 (pad 1): (H, W) -> (H/4, W/4)."""
    x = conv_bn(x, width, 7, 2, "conv1", "bn1")
    x = keras.layers.ReLU(name="relu")(x)
    # torch pads the max pool with -inf; zeros are equivalent because the input is post-ReLU.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)


def build_small_input_stem(x, width: int = STAGE_WIDTHS[0]):
    """conv1 3x3/1 -> bn1 -> relu, no max pool: the CIFAR ResNet stem (He et al. 2016,
    section 4.2) for inputs of a few dozen pixels, such as MedMNIST's 28x28, which the
    ImageNet stem would shrink to 7x7 before the first block."""
    x = conv_bn(x, width, 3, 1, "conv1", "bn1")
    return keras.layers.ReLU(name="relu")(x)


STEMS = {"imagenet": build_stem, "small": build_small_input_stem}


def shortcut(x, out_channels: int, strides: int, name: str):
    """Identity, or torch's ``downsample`` (1x1 conv with the block's stride + BN) when the
    shape changes."""
    if strides == 1 and x.shape[-1] == out_channels:
        return x
    return conv_bn(x, out_channels, 1, strides, f"{name}_downsample_0", f"{name}_downsample_1")


def basic_block(x, width: int, strides: int, name: str):
    """ResNet18/34 block: two 3x3 conv-BN, the first strided, added to the shortcut."""
    residual = shortcut(x, width, strides, name)
    x = conv_bn(x, width, 3, strides, f"{name}_conv1", f"{name}_bn1")
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = conv_bn(x, width, 3, 1, f"{name}_conv2", f"{name}_bn2")
    x = keras.layers.Add(name=f"{name}_add")([x, residual])
    return keras.layers.ReLU(name=f"{name}_relu2")(x)


def build_stages(x, block, blocks_per_stage: tuple[int, ...], widths=STAGE_WIDTHS):
    """layer1..layer4: ``blocks_per_stage[i]`` blocks of width ``widths[i]``; the first
    block of each stage carries the stride."""
    stages = zip(widths, STAGE_STRIDES, blocks_per_stage, strict=True)
    for stage, (width, stride, count) in enumerate(stages, start=1):
        for index in range(count):
            x = block(x, width, stride if index == 0 else 1, f"layer{stage}_{index}")
    return x


def build_head(x, include_top: bool, pooling, classes: int, classifier_activation):
    """torch head ``avgpool -> fc``, or keras.applications' headless ``pooling`` option."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
        return keras.layers.Dense(classes, activation=classifier_activation, name="fc")(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="global_maxpool")(x)
    if pooling is not None:
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    return x


def build_resnet(
    architecture: str,  # "resnet34" or "seresnet50": names the ImageNet weights file
    block,  # block(x, width, strides, name) -> tensor
    blocks_per_stage: tuple[int, ...],  # blocks in layer1..layer4
    *,
    input_shape,  # (H, W, 3), channels last; H and W may be None
    include_top: bool,  # avgpool + fc(classes) head as in torch
    weights,  # None, "imagenet" or a path to a .weights.h5 file
    pooling,  # headless only: None, "avg" or "max"
    classes: int,  # fc outputs
    classifier_activation,  # None gives logits, as torch does
    name: str,  # the keras.Model's name
    widths: tuple[int, ...] = STAGE_WIDTHS,  # block widths of layer1..layer4 (stem: widths[0])
    stem: str = "imagenet",  # "imagenet" (7x7/2 + max pool) or "small" (3x3/1, see STEMS)
) -> keras.Model:
    """The ResNet skeleton shared by ResNet18/34 and SE-ResNet50: stem, stages, head,
    weights."""
    if keras.config.image_data_format() != "channels_last":  # torch weights map to NHWC only
        raise ValueError(f"{architecture} is built channels_last; keras.config says otherwise")
    check_weights_argument(weights, include_top, classes)
    if weights == "imagenet":  # before building: a missing file should fail fast
        weights = find_imagenet_weights(architecture, include_top)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = STEMS[stem](inputs, widths[0])
    x = build_stages(x, block, blocks_per_stage, widths)
    outputs = build_head(x, include_top, pooling, classes, classifier_activation)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        load_weights_file(model, weights)
    return model


def build_resnet18(
    input_shape=(224, 224, 3),  # (H, W, 3)
    include_top=True,  # torch's avgpool + fc head
    weights=None,  # None, "imagenet" (converted, see module docstring) or a .weights.h5 path
    pooling=None,  # headless only: None (feature map), "avg" or "max"
    classes=1000,  # fc outputs
    name="resnet18",
    classifier_activation=None,  # None: logits like torch; "softmax" like keras.applications
    width=STAGE_WIDTHS[0],  # layer1's width; the stages double it. 64: torchvision resnet18
    stem="imagenet",  # "imagenet" (torchvision) or "small" (CIFAR: 3x3/1, no max pool)
) -> keras.Model:
    """ResNet18: basic blocks 2-2-2-2, as torchvision ``resnet18`` at ``width=64``.

    ``width=32`` is the half-width ResNet18 (2.8M parameters, a quarter of the FLOPs) that
    trains from scratch on a CPU in an hour. ``stem="small"`` is the CIFAR / MedMNIST
    "ResNet-18 (28)" layout for tiny inputs. ImageNet weights exist for the torchvision
    layout only."""
    if (width, stem) != (STAGE_WIDTHS[0], "imagenet") and weights == "imagenet":
        raise ValueError(f"ImageNet weights exist for torchvision's resnet18 only, not width "
                         f"{width} with the {stem} stem")
    return build_resnet(
        "resnet18",
        basic_block,
        (2, 2, 2, 2),
        input_shape=input_shape,
        include_top=include_top,
        weights=weights,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        widths=tuple(width * 2**stage for stage in range(4)),
        stem=stem,
    )


def build_resnet34(
    input_shape=(224, 224, 3),  # (H, W, 3); the paper's inputs are 224x300 and 450x600
    include_top=True,  # torch's avgpool + fc head
    weights=None,  # None, "imagenet" (converted, see module docstring) or a .weights.h5 path
    pooling=None,  # headless only: None (feature map), "avg" or "max" (512 features)
    classes=1000,  # fc outputs
    name="resnet34",
    classifier_activation=None,  # None: logits like torch; "softmax" like keras.applications
) -> keras.Model:
    """ResNet34: basic blocks 3-4-6-3, as torchvision ``resnet34`` / timm ``resnet34``."""
    return build_resnet(
        "resnet34",
        basic_block,
        (3, 4, 6, 3),
        input_shape=input_shape,
        include_top=include_top,
        weights=weights,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
    )


def check_weights_argument(weights, include_top: bool, classes: int) -> None:
    """keras.applications' rules for ``weights``, checked before the model is built."""
    if weights is None:
        return
    if weights == "imagenet":
        if include_top and classes != IMAGENET_CLASSES:
            raise ValueError(
                f"weights='imagenet' with include_top=True needs classes=1000, got {classes}; "
                "use include_top=False and add your own head"
            )
        return
    if not Path(weights).is_file():
        raise ValueError(
            f"weights must be None, 'imagenet' or the path of a .weights.h5 file; "
            f"no file at {weights!r}"
        )


def weights_cache_dir() -> Path:
    """Where ``weights="imagenet"`` looks: $DERMNET_WEIGHTS_DIR, else $KERAS_HOME/dermnet."""
    if os.environ.get("DERMNET_WEIGHTS_DIR"):
        return Path(os.environ["DERMNET_WEIGHTS_DIR"]).expanduser()
    keras_home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(keras_home).expanduser() / "dermnet"


def imagenet_weights_name(architecture: str, include_top: bool) -> str:
    """File name of converted ImageNet weights in the cache directory."""
    return f"{architecture}_imagenet{'' if include_top else '_notop'}.weights.h5"


def find_imagenet_weights(architecture: str, include_top: bool) -> Path:
    """The cached converted weights for a model; a headless model also accepts the full file.

    Raises FileNotFoundError telling the user how to convert a torch checkpoint."""
    names = [imagenet_weights_name(architecture, include_top)]
    if not include_top:
        names.append(imagenet_weights_name(architecture, include_top=True))
    folder = weights_cache_dir()
    for file_name in names:
        if (folder / file_name).is_file():
            return folder / file_name
    raise FileNotFoundError(
        f"No converted ImageNet weights for {architecture}: looked for "
        f"{' or '.join(str(folder / n) for n in names)}. Keras ships no {architecture}; convert "
        f"a PyTorch checkpoint once ({CHECKPOINT_SOURCES[architecture]}) with:\n"
        f"    python -m dermnet.models.convert CHECKPOINT --arch {architecture} --install\n"
        "(set DERMNET_WEIGHTS_DIR to use another folder)."
    )


def load_weights_file(model: keras.Model, path) -> None:
    """``model.load_weights`` with an error that names the file and the model."""
    try:
        model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(
            f"Could not load weights file {path} into model {model.name!r} (wrong architecture, "
            f"classes or include_top?): {error}"
        ) from error
