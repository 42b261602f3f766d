"""SE-ResNet50 (Hu et al. 2018) as timm's ``seresnet50``: ResNet50 bottlenecks (stride on the
3x3 conv) with a squeeze-and-excitation module after ``bn3``, before the residual add.

Stem, stages, head and weight loading come from ``dermnet.models.resnet``; layer names mirror
timm's module names (``layer1.0.se.fc1`` -> ``layer1_0_se_fc1``).
"""

import keras

from dermnet.models.resnet import build_resnet, conv_bn, conv_initializer, shortcut

EXPANSION = 4  # a bottleneck's output has 4x its width
SE_REDUCTION = 16  # squeeze to channels / 16 (timm rd_ratio 1/16)
SE_DIVISOR = 8  # timm rounds the squeezed width to a multiple of 8


def compute_squeezed_channels(channels: int) -> int:
    """timm's ``make_divisible(channels / 16, 8, round_limit=0)``: 256 -> 16, 2048 -> 128."""
    rounded = int(channels / SE_REDUCTION + SE_DIVISOR / 2) // SE_DIVISOR * SE_DIVISOR
    return max(SE_DIVISOR, rounded)


def squeeze_excite(x, name: str):
    """timm ``SEModule``: x * sigmoid(fc2(relu(fc1(mean over H, W)))), fc1/fc2 as biased 1x1
    convs."""
    channels = x.shape[-1]
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)  # (1,1,C)
    squeezed = compute_squeezed_channels(channels)
    gate = keras.layers.Conv2D(
        squeezed, 1, kernel_initializer=conv_initializer(), name=f"{name}_fc1"
    )(gate)
    gate = keras.layers.ReLU(name=f"{name}_relu")(gate)
    gate = keras.layers.Conv2D(
        channels, 1, activation="sigmoid", kernel_initializer=conv_initializer(), name=f"{name}_fc2"
    )(gate)
    return keras.layers.Multiply(name=f"{name}_scale")([x, gate])


def se_bottleneck_block(x, width: int, strides: int, name: str):
    """timm ``Bottleneck`` with ``attn_layer='se'``: 1x1 -> 3x3 (strided) -> 1x1 (x4), SE, add."""
    residual = shortcut(x, width * EXPANSION, strides, name)
    x = conv_bn(x, width, 1, 1, f"{name}_conv1", f"{name}_bn1")
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = conv_bn(x, width, 3, strides, f"{name}_conv2", f"{name}_bn2")
    x = keras.layers.ReLU(name=f"{name}_relu2")(x)
    x = conv_bn(x, width * EXPANSION, 1, 1, f"{name}_conv3", f"{name}_bn3")
    x = squeeze_excite(x, f"{name}_se")
    x = keras.layers.Add(name=f"{name}_add")([x, residual])
    return keras.layers.ReLU(name=f"{name}_relu3")(x)


def build_seresnet50(
    input_shape=(224, 224, 3),  # (H, W, 3); the paper's inputs are 224x300 and 450x600
    include_top=True,  # timm's global average pool + fc head
    weights=None,  # None, "imagenet" (converted, see dermnet.models.resnet) or a .weights.h5 path
    pooling=None,  # headless only: None (feature map), "avg" or "max" (2048 features)
    classes=1000,  # fc outputs
    name="seresnet50",
    classifier_activation=None,  # None: logits like timm; "softmax" like keras.applications
) -> keras.Model:
    """SE-ResNet50: SE bottleneck blocks 3-4-6-3, as timm ``seresnet50``."""
    return build_resnet(
        "seresnet50",
        se_bottleneck_block,
        (3, 4, 6, 3),
        input_shape=input_shape,
        include_top=include_top,
        weights=weights,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
    )
