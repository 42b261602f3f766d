"""Classifier builder: named inputs, preprocessing inside, clinical branch, save/reload."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras.applications import imagenet_utils

from dermnet.models.backbones import list_backbones
from dermnet.models.classifier import (
    build_classifier,
    freeze_backbone,
    get_backbone_model,
    set_batchnorm_momentum,
    set_batchnorm_synchronized,
    unfreeze_top,
    walk_layers,
)
from dermnet.models.clinical_branch import ClinicalMasking
from dermnet.models.preprocessing import PixelPreprocessing

RNG = np.random.default_rng(0)
SMALL = (64, 80)


def make_inputs(batch=2, shape=SMALL, clinical=20):
    inputs = {"image": RNG.integers(0, 256, (batch, *shape, 3)).astype("uint8")}
    if clinical:
        inputs["clinical"] = RNG.normal(size=(batch, clinical)).astype("float32")
    return inputs


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_preprocessing_matches_keras_applications(mode):
    pixels = RNG.uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = imagenet_utils.preprocess_input(pixels.copy(), mode=mode)
    np.testing.assert_allclose(PixelPreprocessing(mode)(pixels), expected, rtol=1e-5, atol=1e-5)


def test_inputs_outputs_and_probabilities():
    model = build_classifier("mobilenet", SMALL, num_classes=7, clinical_features=20)
    assert sorted(tensor.name for tensor in model.inputs) == ["clinical", "image"]
    assert model.layers[-1].name == "probabilities"
    probabilities = model.predict(make_inputs(), verbose=0)
    assert probabilities.shape == (2, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_uint8_and_float_pixels_give_the_same_output():
    model = build_classifier("vgg16", (32, 32))
    images = make_inputs(shape=(32, 32), clinical=None)["image"]
    np.testing.assert_allclose(model.predict({"image": images}, verbose=0),
                               model.predict({"image": images.astype("float32")}, verbose=0),
                               rtol=1e-6)


def test_logits_output_is_softmax_free():
    model = build_classifier("mobilenet", SMALL, output="logits")
    logits = model.predict(make_inputs(clinical=None), verbose=0)
    assert not np.allclose(logits.sum(axis=1), 1.0)
    assert model.layers[-1].name == "logits"


@pytest.mark.parametrize("kwargs, message", [
    ({"image_shape": (16, 300)}, "needs images of at least 32x32"),
    ({"image_shape": (64, 64, 1)}, "image_shape must be"),
    ({"weights": "no/such/file.weights.h5"}, "existing weights file"),
    ({"output": "scores"}, "output must be one of"),
])
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"backbone": "mobilenet", "image_shape": SMALL} | kwargs
    with pytest.raises(ValueError, match=message):
        build_classifier(**arguments)


def test_clinical_masking_zeroes_whole_rows_in_training_only():
    layer = ClinicalMasking(rate=0.5, seed=1)
    clinical = np.ones((400, 20), dtype="float32")
    assert np.array_equal(layer(clinical, training=False), clinical)
    masked = np.asarray(layer(clinical, training=True))
    row_sums = masked.sum(axis=1)
    assert set(np.unique(row_sums)) == {0.0, 20.0}
    assert 0.4 < (row_sums == 0).mean() < 0.6
    assert ClinicalMasking.from_config(layer.get_config()).rate == 0.5


def test_two_phase_fine_tuning_keeps_batchnorm_frozen():
    model = build_classifier("resnet50", SMALL, clinical_features=20)
    backbone = get_backbone_model(model)
    freeze_backbone(model)
    assert not backbone.trainable_weights
    assert model.trainable_weights  # head and clinical branch still train
    unfrozen = unfreeze_top(model, fraction=0.25)
    assert unfrozen > 0
    norm = keras.layers.BatchNormalization
    norms = [layer for layer in backbone.layers if isinstance(layer, norm)]
    assert norms and not any(layer.trainable for layer in norms)
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[-1].trainable and not convs[0].trainable


def test_batchnorm_momentum_reaches_backbone_and_branch():
    model = build_classifier("mobilenet", SMALL, clinical_features=20)
    norms = [layer for layer in walk_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 20 and {layer.momentum for layer in norms} == {0.99}
    set_batchnorm_momentum(model, 0.9)
    assert {layer.momentum for layer in norms} == {0.9}
    assert {layer.synchronized for layer in norms} == {False}
    set_batchnorm_synchronized(model, True)
    assert {layer.synchronized for layer in norms} == {True}


def test_load_model_needs_only_the_package(tmp_path):
    import dermnet.models

    model = build_classifier("mobilenet", SMALL, clinical_features=20)
    model.save(tmp_path / "model.keras")
    reloaded = dermnet.models.load_model(tmp_path / "model.keras")
    inputs = make_inputs()
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0),
                               model.predict(inputs, verbose=0), atol=1e-6)


def save_and_reload(model, tmp_path):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    return keras.models.load_model(path, safe_mode=True), path


@pytest.mark.slow
@pytest.mark.parametrize("name", list_backbones())
def test_save_reload_with_clinical_branch_gives_identical_outputs(name, tmp_path):
    model = build_classifier(name, SMALL, clinical_features=20, clinical_mask_rate=0.1)
    inputs = make_inputs()
    reloaded, _ = save_and_reload(model, tmp_path)
    np.testing.assert_array_equal(reloaded.predict(inputs, verbose=0),
                                  model.predict(inputs, verbose=0))


@pytest.mark.slow
def test_reload_in_a_fresh_process_with_safe_mode(tmp_path):
    model = build_classifier("mobilenet", SMALL, clinical_features=20)
    inputs = make_inputs()
    expected = model.predict(inputs, verbose=0)
    _, path = save_and_reload(model, tmp_path)
    np.savez(tmp_path / "inputs.npz", expected=expected, **inputs)
    script = textwrap.dedent(f"""
        import keras, numpy as np
        import dermnet.models.classifier  # registers the custom layers
        data = np.load({str(tmp_path / "inputs.npz")!r})
        model = keras.models.load_model({str(path)!r}, safe_mode=True)
        got = model.predict({{"image": data["image"], "clinical": data["clinical"]}}, verbose=0)
        np.testing.assert_array_equal(got, data["expected"])
        print("identical")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "identical" in result.stdout
