"""The eight backbones of the first study, and two ResNet18s, registered by name.

Six come from Keras Applications; ResNet18, ResNet34 and SE-ResNet50, which it lacks,
are built in ``resnet.py`` and ``seresnet.py`` (ImageNet weights via ``convert.py``).
Reference parameter counts are the published ones with a 1000-class top. Keras counts
batch-norm moving statistics as (non-trainable) parameters, PyTorch does not: the figures for
the two built here are torchvision / timm ``parameters()`` counts, so they are compared
without the moving statistics (``BackboneSpec.reference_counts_statistics``).

Importing this module registers them; ``get_backbone(name)`` and ``list_backbones()`` look
up every registered backbone (``dermnet.models.registry``).
"""

from __future__ import annotations

import keras

from dermnet.models.registry import BackboneSpec, register_backbone, registered_backbones


def _keras_application(constructor):
    """Headless builder around a ``keras.applications`` constructor."""

    def build(input_shape, weights=None, include_top=False):
        return constructor(include_top=include_top, weights=weights,
                           input_shape=tuple(input_shape))

    return build


def _resnet18(width: int, stem: str = "imagenet"):
    def build(input_shape, weights=None, include_top=False):
        from dermnet.models.resnet import build_resnet18

        suffix = ("" if width == 64 else f"_w{width}") + ("" if stem == "imagenet" else "_small")
        return build_resnet18(input_shape=tuple(input_shape), include_top=include_top,
                              weights=weights, width=width, stem=stem,
                              name=f"resnet18{suffix}")

    return build


def _resnet34(input_shape, weights=None, include_top=False):
    from dermnet.models.resnet import build_resnet34

    return build_resnet34(input_shape=tuple(input_shape), include_top=include_top,
                          weights=weights)


def _seresnet50(input_shape, weights=None, include_top=False):
    from dermnet.models.seresnet import build_seresnet50

    return build_seresnet50(input_shape=tuple(input_shape), include_top=include_top,
                            weights=weights)


_APPLICATIONS = keras.applications
_IMAGENET = ("imagenet",)

for _spec in (
    BackboneSpec("resnet18", _resnet18(64), "torch", 512, _IMAGENET, 11_689_512,
                 "dermnet.models.resnet (torchvision resnet18)",
                 reference_counts_statistics=False),
    # Not in the study: the half-width ResNet18 of the cpu-real preset, trained from
    # scratch. Its reference count is worked out by hand in tests/models/test_registry.py.
    BackboneSpec("resnet18-half", _resnet18(32), "torch", 256, (), 3_055_880,
                 "dermnet.models.resnet (torchvision resnet18 at half width)",
                 reference_counts_statistics=False),
    # For inputs of a few dozen pixels (MedMNIST's 28x28): the CIFAR stem, 3x3 stride 1 and
    # no max pool, as MedMNIST v2's "ResNet-18 (28)"; full and half width.
    BackboneSpec("resnet18-small", _resnet18(64, "small"), "torch", 512, (), 11_681_832,
                 "dermnet.models.resnet (CIFAR / MedMNIST ResNet-18 (28) stem)",
                 min_size=8, reference_counts_statistics=False),
    BackboneSpec("resnet18-small-half", _resnet18(32, "small"), "torch", 256, (), 3_052_040,
                 "dermnet.models.resnet (CIFAR stem, half width)",
                 min_size=8, reference_counts_statistics=False),
    BackboneSpec("resnet34", _resnet34, "torch", 512, _IMAGENET, 21_797_672,
                 "dermnet.models.resnet (torchvision resnet34)",
                 reference_counts_statistics=False),
    BackboneSpec("resnet50", _keras_application(_APPLICATIONS.ResNet50), "caffe", 2048,
                 _IMAGENET, 25_636_712, "keras.applications.ResNet50"),
    BackboneSpec("resnet101", _keras_application(_APPLICATIONS.ResNet101), "caffe", 2048,
                 _IMAGENET, 44_707_176, "keras.applications.ResNet101"),
    BackboneSpec("seresnet50", _seresnet50, "torch", 2048, _IMAGENET, 28_088_024,
                 "dermnet.models.seresnet (timm seresnet50)",
                 reference_counts_statistics=False),
    BackboneSpec("vgg16", _keras_application(_APPLICATIONS.VGG16), "caffe", 512,
                 _IMAGENET, 138_357_544, "keras.applications.VGG16"),
    BackboneSpec("vgg19", _keras_application(_APPLICATIONS.VGG19), "caffe", 512,
                 _IMAGENET, 143_667_240, "keras.applications.VGG19"),
    BackboneSpec("efficientnetb5", _keras_application(_APPLICATIONS.EfficientNetB5), "none",
                 2048, _IMAGENET, 30_562_527, "keras.applications.EfficientNetB5"),
    BackboneSpec("mobilenet", _keras_application(_APPLICATIONS.MobileNet), "tf", 1024,
                 _IMAGENET, 4_253_864, "keras.applications.MobileNet (v1, alpha 1.0)"),
):
    register_backbone(_spec)


def get_backbone(name: str) -> BackboneSpec:
    """The registered backbone ``name``; an unknown name lists the valid ones."""
    try:
        return registered_backbones()[name]
    except KeyError:
        valid = ", ".join(list_backbones())
        raise ValueError(f"unknown backbone {name!r}; valid: {valid}") from None


def list_backbones() -> list[str]:
    """Registered backbone names, in registration order: the built-in ones, then any a
    user registered with ``registry.register_backbone``."""
    return list(registered_backbones())
