"""Backbone registry: every registered backbone is tested, parameter counts are pinned."""

import math

import keras
import pytest

from dermnet.models.backbones import get_backbone, list_backbones
from dermnet.models.classifier import walk_layers
from dermnet.models.registry import BackboneSpec, register_backbone

# One table drives the parametrised tests (keras.applications style): name -> pooled width.
EXPECTED = {
    "resnet18": 512, "resnet18-half": 256, "resnet18-small": 512, "resnet18-small-half": 256,
    "resnet34": 512, "resnet50": 2048,
    "resnet101": 2048, "seresnet50": 2048,
    "vgg16": 512, "vgg19": 512, "efficientnetb5": 2048, "mobilenet": 1024,
}

# Published parameter counts with the 1000-class ImageNet top (Keras Applications, timm).
def resnet18_parameters(width: int, stem_kernel: int = 7, classes: int = 1000) -> int:
    """ResNet18's parameters (torch convention: no BN moving statistics), worked out from
    its layer list for a layer1 width and stem kernel; (64, 7) is torchvision's resnet18,
    (64, 3) the CIFAR / MedMNIST one."""
    total = stem_kernel ** 2 * 3 * width + 2 * width  # conv1 + bn1 (gamma, beta)
    channels = width
    for stage in range(4):
        stage_width = width * 2 ** stage
        for _ in range(2):  # two basic blocks per stage
            total += 9 * channels * stage_width + 9 * stage_width ** 2 + 4 * stage_width
            if channels != stage_width:  # 1x1 downsample + BN
                total += channels * stage_width + 2 * stage_width
            channels = stage_width
    return total + channels * classes + classes


PUBLISHED = {
    "resnet18": 11_689_512,  # torchvision
    "resnet18-half": resnet18_parameters(32),  # not published: worked out above
    "resnet18-small": resnet18_parameters(64, stem_kernel=3),
    "resnet18-small-half": resnet18_parameters(32, stem_kernel=3),
    "resnet34": 21_797_672, "seresnet50": 28_088_024, "resnet50": 25_636_712,
    "resnet101": 44_707_176, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "efficientnetb5": 30_562_527, "mobilenet": 4_253_864,
}


def test_every_registered_backbone_is_in_the_test_table():
    assert list_backbones() == list(EXPECTED)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'; valid: resnet18, "):
        get_backbone("resnet19")


def test_worked_out_resnet18_count_matches_torchvision():
    assert resnet18_parameters(64) == 11_689_512


def test_names_register_once():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(BackboneSpec("vgg16", None, "caffe", 512, (), 0, "duplicate"))


def count_like_reference(model: keras.Model, with_statistics: bool) -> int:
    """Keras counts BN moving mean/variance; PyTorch's parameters() does not."""
    statistics = sum(
        math.prod(weight.shape)
        for layer in walk_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        for weight in (layer.moving_mean, layer.moving_variance)
    )
    return model.count_params() - (0 if with_statistics else statistics)



@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_parameter_count_with_imagenet_top_matches_published(name):
    spec = get_backbone(name)
    assert spec.reference_parameters == PUBLISHED[name]
    model = spec.build((224, 224, 3), include_top=True)
    assert count_like_reference(model, spec.reference_counts_statistics) == PUBLISHED[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_headless_feature_width_at_low_and_high_resolution(name):
    spec = get_backbone(name)
    assert spec.feature_width == EXPECTED[name]
    for shape in ((224, 300, 3), (450, 600, 3)):
        output_shape = spec.build(shape).output_shape
        assert output_shape[-1] == EXPECTED[name]
        assert output_shape[0] is None


def test_small_input_stem_keeps_detail_of_28_pixel_images():
    """MedMNIST's 28x28 images: the CIFAR stem (3x3 stride 1, no max pool) leaves a 4x4 map
    after three stride-2 stages; the ImageNet stem would refuse them (min 32)."""
    assert get_backbone("resnet18-small-half").build((28, 28, 3)).output_shape == (None, 4, 4,
                                                                                  256)
    stem = get_backbone("resnet18-small").build((28, 28, 3)).get_layer("conv1")
    assert stem.kernel_size == (3, 3) and stem.strides == (1, 1)
    assert get_backbone("resnet18").min_size == 32 and get_backbone("resnet18-small").min_size == 8
