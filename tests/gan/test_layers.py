"""Progressive-GAN layers: the equalized runtime scale against plain Keras layers, unit-RMS
pixel norm, minibatch stddev against numpy (including awkward batch sizes), save/reload."""

import ast
import importlib.util
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import gan.layers
from gan.layers import (
    EqualizedConv2D,
    EqualizedDense,
    MinibatchStdDev,
    PixelNormalization,
    compute_group_size,
    compute_runtime_scale,
)

RNG = np.random.default_rng(0)
ROOT = Path(__file__).resolve().parents[2]


def random(*shape):
    return RNG.normal(size=shape).astype("float32")


@pytest.mark.parametrize("gain", [math.sqrt(2), 1.0])
def test_equalized_dense_equals_a_dense_with_the_scaled_kernel(gain):
    inputs = random(5, 12)
    layer = EqualizedDense(7, gain=gain)
    layer.build((None, 12))
    layer.bias.assign(random(7))
    plain = keras.layers.Dense(7)
    plain.build((None, 12))
    plain.set_weights([layer.kernel.numpy() * gain / math.sqrt(12), layer.bias.numpy()])
    np.testing.assert_allclose(layer(inputs), plain(inputs), rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 12)) == (None, 7)


@pytest.mark.parametrize("kernel_size, gain", [(3, math.sqrt(2)), (1, 1.0), (4, 0.5)])
def test_equalized_conv_equals_a_conv_with_the_scaled_kernel(kernel_size, gain):
    images = random(2, 8, 8, 5)
    layer = EqualizedConv2D(6, kernel_size, gain=gain)
    layer.build((None, 8, 8, 5))
    layer.bias.assign(random(6))
    plain = keras.layers.Conv2D(6, kernel_size, padding="same")
    plain.build((None, 8, 8, 5))
    scale = gain / math.sqrt(kernel_size * kernel_size * 5)  # fan-in = k * k * channels
    plain.set_weights([layer.kernel.numpy() * scale, layer.bias.numpy()])
    outputs = layer(images)
    assert outputs.shape == (2, 8, 8, 6)  # 'same' padding keeps H and W, even for k = 4
    np.testing.assert_allclose(outputs, plain(images), rtol=1e-5, atol=1e-5)


def test_equalized_weights_are_unit_normal_and_biases_zero():
    keras.utils.set_random_seed(3)
    layer = EqualizedConv2D(64, 3, use_bias=True)
    layer.build((None, 4, 4, 64))
    kernel = layer.kernel.numpy()  # 36,864 draws
    assert abs(kernel.mean()) < 0.02 and abs(kernel.std() - 1.0) < 0.02
    assert not np.any(layer.bias.numpy())
    assert layer.scale == pytest.approx(math.sqrt(2 / (9 * 64)))
    assert compute_runtime_scale(1.0, 16) == 0.25
    assert EqualizedDense(3, use_bias=False)(random(2, 4)).shape == (2, 3)


def test_pixel_norm_gives_unit_rms_per_pixel_and_keeps_direction():
    scales = np.array([0.1, 1.0, 50.0], "float32").reshape(3, 1, 1, 1)
    features = random(3, 4, 4, 16) * scales
    normalised = np.asarray(PixelNormalization()(features))
    rms = np.sqrt(np.mean(normalised**2, axis=-1))  # [3, 4, 4]
    np.testing.assert_allclose(rms, 1.0, rtol=1e-5)
    ratio = normalised / features  # one positive factor per pixel
    np.testing.assert_allclose(ratio, ratio[..., :1].repeat(16, axis=-1), rtol=1e-5)
    assert np.all(ratio > 0)


def test_pixel_norm_of_zeros_is_zero_not_nan():
    assert not np.any(np.asarray(PixelNormalization()(np.zeros((1, 2, 2, 4), "float32"))))


def numpy_minibatch_stddev(x, group_size, epsilon=1e-8):
    """Independent loop version: sample n belongs to sub-batch n % M (the official reshape)."""
    batch = x.shape[0]
    group = max(g for g in range(1, group_size + 1) if batch % g == 0)
    subbatches = batch // group
    extra = np.empty(x.shape[:3] + (1,), dtype=np.float64)
    for m in range(subbatches):
        members = x[m::subbatches].astype(np.float64)  # the G samples of sub-batch m
        stddev = np.sqrt(members.var(axis=0) + epsilon).mean()
        extra[m::subbatches] = stddev
    return np.concatenate([x, extra.astype(x.dtype)], axis=-1)


@pytest.mark.parametrize("batch", [8, 4, 2, 1, 6, 7])
def test_minibatch_stddev_matches_numpy(batch):
    spread = np.arange(1, batch + 1, dtype="float32").reshape(-1, 1, 1, 1)  # unequal groups
    features = random(batch, 4, 4, 3) * spread
    outputs = np.asarray(MinibatchStdDev(group_size=4)(features))
    assert outputs.shape == (batch, 4, 4, 4)
    np.testing.assert_allclose(outputs, numpy_minibatch_stddev(features, 4), rtol=1e-5)
    np.testing.assert_array_equal(outputs[..., :3], features)


def test_minibatch_stddev_of_identical_samples_is_sqrt_epsilon():
    same = np.tile(random(1, 2, 2, 3), (4, 1, 1, 1))
    outputs = np.asarray(MinibatchStdDev()(same))
    np.testing.assert_allclose(outputs[..., 3], 1e-4, rtol=1e-5)  # sqrt(1e-8)


@pytest.mark.parametrize("batch, expected", [(8, 4), (4, 4), (2, 2), (1, 1), (6, 3), (7, 1),
                                             (9, 3), (10, 2)])
def test_group_size_is_the_largest_divisor_up_to_four(batch, expected):
    assert compute_group_size(batch, 4) == expected
    assert int(compute_group_size(tf.constant(batch), 4)) == expected  # unknown-batch path


def test_minibatch_stddev_with_an_unknown_batch_inside_a_graph():
    layer = MinibatchStdDev()
    call = tf.function(layer, input_signature=[tf.TensorSpec((None, 4, 4, 3), tf.float32)])
    features = random(6, 4, 4, 3)
    np.testing.assert_allclose(call(features), numpy_minibatch_stddev(features, 4), rtol=1e-5)
    assert layer.compute_output_shape((None, 4, 4, 3)) == (None, 4, 4, 4)


@pytest.mark.parametrize("layer, message", [
    (lambda: EqualizedDense(0), "units must be positive"),
    (lambda: EqualizedConv2D(4, 0), "filters and kernel_size must be positive"),
    (lambda: MinibatchStdDev(group_size=0), "group_size must be positive"),
])
def test_bad_arguments_are_named(layer, message):
    with pytest.raises(ValueError, match=message):
        layer()


def build_probe_model():
    images = keras.Input((8, 8, 3))
    features = EqualizedConv2D(4, 3, gain=1.5, name="conv")(images)
    features = PixelNormalization(epsilon=1e-6, name="pixel_norm")(features)
    features = MinibatchStdDev(group_size=2, name="stddev")(features)
    features = keras.layers.Flatten()(features)
    score = EqualizedDense(1, gain=1.0, use_bias=False, name="dense")(features)
    return keras.Model(images, score)


def test_save_reload_gives_identical_outputs_and_configs(tmp_path):
    model = build_probe_model()
    model.get_layer("conv").bias.assign(random(4))
    images = random(4, 8, 8, 3)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(reloaded(images), model(images))
    for name in ("conv", "pixel_norm", "stddev", "dense"):
        assert reloaded.get_layer(name).get_config() == model.get_layer(name).get_config()
    assert reloaded.get_layer("stddev").group_size == 2
    assert reloaded.get_layer("conv").gain == 1.5


def test_layers_module_imports_keras_only():
    tree = ast.parse(Path(gan.layers.__file__).read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "keras" in modules
    assert not {name for name in modules if name and name.split(".")[0] == "tensorflow"}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_layers_build_and_differentiate_under_jax_without_tensorflow():
    script = textwrap.dedent("""
        import sys
        import jax, keras, numpy as np
        from gan.layers import (EqualizedConv2D, EqualizedDense, MinibatchStdDev,
                                PixelNormalization)
        assert keras.backend.backend() == "jax"
        images = keras.Input((8, 8, 3))
        features = PixelNormalization()(EqualizedConv2D(4)(images))
        features = keras.layers.Flatten()(MinibatchStdDev()(features))
        model = keras.Model(images, EqualizedDense(1)(features))
        batch = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype("float32")
        trainable = [v.value for v in model.trainable_variables]
        def loss(values):
            out, _ = model.stateless_call(values, [], batch)
            return out.sum()
        grads = jax.jit(jax.grad(loss))(trainable)
        assert all(np.isfinite(np.asarray(g)).all() for g in grads)
        assert model(batch).shape == (6, 1)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("jax ok")
    """)
    environment = os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=environment, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax ok" in result.stdout
