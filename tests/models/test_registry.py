"""Backbone registry: every registered backbone is tested, parameter counts are pinned."""

import math

import keras
import pytest

from dermnet.models.classifier import walk_layers
from dermnet.models.registry import BackboneSpec, get_backbone, list_backbones, register_backbone

# One table drives the parametrised tests (keras.applications style): name -> pooled width.
EXPECTED = {
    "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "seresnet50": 2048,
    "vgg16": 512, "vgg19": 512, "efficientnetb5": 2048, "mobilenet": 1024,
}

# Published parameter counts with the 1000-class ImageNet top (DESIGN.md section 5).
PUBLISHED = {
    "resnet34": 21_797_672, "seresnet50": 28_088_024, "resnet50": 25_636_712,
    "resnet101": 44_707_176, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "efficientnetb5": 30_562_527, "mobilenet": 4_253_864,
}


def test_every_registered_backbone_is_in_the_test_table():
    assert list_backbones() == list(EXPECTED)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet18'; valid: resnet34, "):
        get_backbone("resnet18")


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



@pytest.mark.parametrize("name", list(EXPECTED))
def test_parameter_count_with_imagenet_top_matches_published(name):
    spec = get_backbone(name)
    assert spec.reference_parameters == PUBLISHED[name]
    model = spec.build((224, 224, 3), include_top=True)
    assert count_like_reference(model, spec.reference_counts_statistics) == PUBLISHED[name]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_headless_feature_width_at_low_and_high_resolution(name):
    spec = get_backbone(name)
    assert spec.feature_width == EXPECTED[name]
    for shape in ((224, 300, 3), (450, 600, 3)):
        output_shape = spec.build(shape).output_shape
        assert output_shape[-1] == EXPECTED[name]
        assert output_shape[0] is None
