"""Spatial transformer: exact identity, known translation and scale, gradients reach the
localization network, no shear unless asked, save/reload, and JAX without TensorFlow."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from dermnet.models.spatial_transformer import (
    SpatialTransformer,
    bilinear_sample,
    compute_affine_theta,
    transform_images,
)

RNG = np.random.default_rng(0)
LOCALIZATION = (32, 32)  # smallest convenient size that survives two 5x5 pools (32 -> 6 -> 1)


def make_layer(**kwargs):
    layer = SpatialTransformer(LOCALIZATION, **kwargs)
    layer.build((None, 16, 16, 1))
    return layer


def set_head(layer, **parameters):
    """Make the head output fixed raw parameters: zero kernel, bias by parameter name."""
    bias = np.zeros(len(layer.parameter_names), dtype="float32")
    for name, value in parameters.items():
        bias[layer.parameter_names.index(name)] = value
    layer.head.bias.assign(bias)


def test_identity_at_initialisation_reproduces_the_input():
    images = RNG.uniform(0, 255, (3, 24, 40, 3)).astype("float32")
    layer = SpatialTransformer(LOCALIZATION)
    np.testing.assert_allclose(layer(images), images, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(layer.compute_theta(images),
                                  np.tile([[1, 0, 0], [0, 1, 0]], (3, 1, 1)))


def test_translation_by_half_moves_a_bright_pixel_a_quarter_width_left():
    image = np.zeros((1, 16, 16, 1), dtype="float32")
    image[0, 5, 10, 0] = 1.0
    layer = make_layer()
    set_head(layer, translate_x=np.arctanh(0.5))  # translate_x = tanh(p) = 0.5
    # x_in = x_out + 0.5 * (16 / 2) = x_out + 4 pixels: output column 6 reads input column 10.
    expected = np.zeros_like(image)
    expected[0, 5, 6, 0] = 1.0
    np.testing.assert_allclose(layer(image), expected, atol=1e-5)


def test_zoom_by_two_samples_the_central_half():
    ramp = np.tile(np.arange(16, dtype="float32"), (16, 1))[None, :, :, None]  # value = x
    layer = make_layer()
    set_head(layer, scale_x=np.arctanh(-0.5), scale_y=np.arctanh(-0.5))  # scale 1 - 0.5
    # x_in = 7.5 + 0.5 * (x_out - 7.5) = 3.75 + 0.5 * x_out; bilinear is exact on a ramp.
    expected = 3.75 + 0.5 * np.arange(16)
    np.testing.assert_allclose(np.asarray(layer(ramp))[0, :, :, 0],
                               np.tile(expected, (16, 1)), atol=1e-5)


def test_output_size_resamples_the_same_field_of_view():
    ramp = np.tile(np.arange(8, dtype="float32"), (8, 1))[None, :, :, None]
    theta = compute_affine_theta(np.zeros((1, 4), "float32"), allow_shear=False)
    # Half-pixel centres: output column j of 4 sits at input x = 2 j + 0.5.
    got = np.asarray(transform_images(ramp, theta, output_size=(4, 4)))[0, 0, :, 0]
    np.testing.assert_allclose(got, [0.5, 2.5, 4.5, 6.5], atol=1e-6)


@pytest.mark.parametrize("padding, expected", [
    ("zeros", [0.0, 0.5, 2.0, 3.0]),  # x = -0.5 is half pixel 0 (value 1), half outside (0)
    ("border", [1.0, 1.0, 2.0, 3.0]),  # outside clamps to the edge pixel
])
def test_padding_outside_the_image(padding, expected):
    image = np.arange(1, 5, dtype="float32").reshape(1, 1, 4, 1)  # values 1, 2, 3, 4
    x = np.array([[[-1.0, -0.5, 1.0, 2.0]]], dtype="float32")
    got = np.asarray(bilinear_sample(image, x, np.zeros_like(x), padding))[0, 0, :, 0]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_gradient_reaches_theta_and_the_localization_network():
    images = tf.constant(RNG.uniform(0, 1, (2, 16, 16, 1)).astype("float32"))
    weights = tf.constant(RNG.normal(size=(2, 16, 16, 1)).astype("float32"))
    layer = make_layer()
    convs = [layer.localization.get_layer(f"localization_conv_{i}").kernel for i in (1, 2)]

    def gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(images) * weights)
        return tape.gradient(loss, [layer.head.bias, *convs])

    head_bias, *conv_kernels = gradients()
    assert np.abs(head_bias.numpy()).max() > 1e-3  # the sampler passes gradient to theta
    # The zero head kernel (identity init) blocks the path below the head at step 0 ...
    assert all(not np.any(kernel.numpy()) for kernel in conv_kernels)
    # ... which opens as soon as the head kernel moves off zero.
    layer.head.kernel.assign(RNG.normal(0, 0.1, layer.head.kernel.shape).astype("float32"))
    _, *conv_kernels = gradients()
    assert all(np.abs(kernel.numpy()).max() > 1e-6 for kernel in conv_kernels)


def build_probe_model(**kwargs):
    image = keras.Input((32, 32, 3))
    warped = SpatialTransformer(LOCALIZATION, name="spatial_transformer", **kwargs)(image)
    score = keras.layers.Dense(1)(keras.layers.Flatten()(warped))
    return keras.Model(image, score)


@pytest.mark.slow
@pytest.mark.parametrize("allow_shear", [False, True])
def test_shear_stays_exactly_zero_unless_allowed(allow_shear):
    keras.utils.set_random_seed(1)
    model = build_probe_model(allow_shear=allow_shear)
    layer = model.get_layer("spatial_transformer")
    layer.head.kernel.assign(RNG.normal(0, 0.1, layer.head.kernel.shape).astype("float32"))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    images = RNG.uniform(0, 1, (8, 32, 32, 3)).astype("float32")
    model.fit(images, RNG.normal(size=(8, 1)), epochs=2, batch_size=4, verbose=0)
    theta = np.asarray(layer.compute_theta(images))
    assert layer.head.units == (6 if allow_shear else 4)
    assert not np.allclose(theta[:, 0, 0], 1.0)  # training moved the transform
    shear = theta[:, [0, 1], [1, 0]]
    assert np.any(shear != 0) if allow_shear else np.all(shear == 0)


def test_save_reload_gives_identical_outputs_and_config(tmp_path):
    model = build_probe_model(allow_shear=True, output_size=(24, 20), padding="border")
    layer = model.get_layer("spatial_transformer")
    layer.head.kernel.assign(RNG.normal(0, 0.1, layer.head.kernel.shape).astype("float32"))
    images = RNG.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0),
                                  model.predict(images, verbose=0))
    assert reloaded.get_layer("spatial_transformer").get_config() == layer.get_config()
    assert layer.compute_output_shape((None, 32, 32, 3)) == (None, 24, 20, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"localization_size": (16, 16)}, "too small for two 5x5 max pools"),
    ({"padding": "reflect"}, "padding must be one of"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpatialTransformer(**({"localization_size": LOCALIZATION} | kwargs))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_identity_and_gradient_under_jax_without_tensorflow():
    script = textwrap.dedent("""
        import sys
        import jax, keras, numpy as np
        from dermnet.models.spatial_transformer import SpatialTransformer
        assert keras.backend.backend() == "jax"
        images = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 1)).astype("float32")
        layer = SpatialTransformer((32, 32))
        np.testing.assert_allclose(layer(images), images, atol=1e-5)
        layer.head.kernel.assign(np.full(layer.head.kernel.shape, 0.05, "float32"))
        trainable = [v.value for v in layer.trainable_variables]
        fixed = [v.value for v in layer.non_trainable_variables]
        def loss(values):
            out, _ = layer.stateless_call(values, fixed, images)
            return (out * np.linspace(-1, 1, 16)[None, None, :, None]).sum()
        grads = jax.jit(jax.grad(loss))(trainable)  # one compiled graph, not op by op
        conv = [g for g, v in zip(grads, layer.trainable_variables) if "conv_1" in v.path]
        assert float(abs(conv[0]).max()) > 0
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("jax ok")
    """)
    environment = os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax ok" in result.stdout
