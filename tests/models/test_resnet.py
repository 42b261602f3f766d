"""ResNet34 and SE-ResNet50 builders: parameter counts, torch-mirroring layers, output shapes,
argument checks and .keras save/reload."""

import keras
import numpy as np
import pytest

from dermnet.models.resnet import build_resnet34
from dermnet.models.seresnet import build_seresnet50, compute_squeezed_channels

# (builder, pooled feature width, torch parameters() count, Keras count_params()) with a
# 1000-class top. torch's parameters() holds conv kernels, BN gamma/beta and the fc; its BN
# running mean/var are buffers. Keras count_params() also counts the BN moving mean/variance
# (non-trainable weights), so: torch count = Keras trainable count = count_params - moving stats.
MODELS = [
    (build_resnet34, 512, 21_797_672, 21_814_696),
    (build_seresnet50, 2048, 28_088_024, 28_141_144),
]
IDS = ["resnet34", "seresnet50"]


@pytest.fixture(scope="module", params=MODELS, ids=IDS)
def full_model(request):
    """Each architecture once, with its 1000-class top, shared by the tests that only read it."""
    builder, _, torch_count, keras_count = request.param
    return builder(), torch_count, keras_count


def count_moving_statistics(model: keras.Model) -> int:
    """Values in the batch-norm moving means and variances."""
    return sum(int(np.prod(w.shape)) for w in model.weights if "moving_" in w.path)


def test_parameter_count_matches_torch(full_model):
    model, torch_count, keras_count = full_model
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert model.count_params() == keras_count
    assert model.count_params() - count_moving_statistics(model) == torch_count
    assert trainable == torch_count


def test_batch_norm_and_convolutions_follow_torch(full_model):
    model = full_model[0]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert norms and all(n.epsilon == 1e-5 and n.momentum == 0.9 for n in norms)
    # Only the SE module's fc1/fc2 (1x1 convs standing in for linear layers) carry a bias.
    biased = {layer.name for layer in convolutions if layer.use_bias}
    assert all("_se_fc" in name for name in biased)
    strided = [layer for layer in convolutions if layer.strides == (2, 2)]
    assert all(layer.padding == "valid" for layer in strided)


def test_layer_names_mirror_torch_modules():
    resnet = build_resnet34(input_shape=(32, 32, 3), include_top=False)
    names = {layer.name for layer in resnet.layers}
    assert {"conv1", "bn1", "layer1_0_conv1", "layer4_2_bn2", "layer2_0_downsample_0"} <= names
    assert "layer1_0_downsample_0" not in names  # layer1 keeps 64 channels and the resolution
    assert "layer3_5_conv1" in names and "layer3_6_conv1" not in names  # 3-4-6-3 blocks


def test_squeeze_excite_widths_follow_timm():
    model = build_seresnet50(input_shape=(32, 32, 3), include_top=False)
    assert model.get_layer("layer1_0_se_fc1").filters == 16
    assert model.get_layer("layer4_2_se_fc1").filters == 128
    assert model.get_layer("layer4_2_se_fc2").filters == 2048
    assert model.get_layer("layer1_0_downsample_0").filters == 256
    assert compute_squeezed_channels(100) == 8  # timm's floor: never fewer than 8


@pytest.mark.parametrize(
    ("height", "width", "feature_height", "feature_width"),
    [(224, 300, 7, 10), (450, 600, 15, 19)],  # torch: ceil-halving five times
)
@pytest.mark.parametrize(("builder", "features"), [m[:2] for m in MODELS], ids=IDS)
def test_headless_shapes_at_paper_resolutions(
    builder, features, height, width, feature_height, feature_width
):
    model = builder(input_shape=(height, width, 3), include_top=False, pooling="avg")
    assert model.output_shape == (None, features)
    feature_map = model.get_layer("avgpool").input
    assert tuple(feature_map.shape) == (None, feature_height, feature_width, features)


def test_max_pooling_option_gives_feature_vector():
    model = build_resnet34(input_shape=(64, 64, 3), include_top=False, pooling="max")
    assert model.output_shape == (None, 512)


@pytest.mark.slow
@pytest.mark.parametrize(("builder", "features"), [m[:2] for m in MODELS], ids=IDS)
def test_small_input_saves_and_reloads_safely(builder, features, tmp_path):
    model = builder(input_shape=(64, 64, 3), classes=7, classifier_activation="softmax")
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    assert expected.shape == (2, 7)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(images)), expected)
    assert reloaded.get_layer("bn1").epsilon == 1e-5


def test_logits_by_default():
    model = build_resnet34(input_shape=(32, 32, 3), classes=3)
    assert model.get_layer("fc").activation is keras.activations.linear


def test_invalid_arguments_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="pooling"):
        build_resnet34(input_shape=(32, 32, 3), include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="classes=1000"):
        build_resnet34(weights="imagenet", classes=7)
    missing = tmp_path / "nothing.weights.h5"
    with pytest.raises(ValueError, match="nothing.weights.h5"):
        build_seresnet50(weights=str(missing))
