"""Progressive generator and discriminator: shapes per stage, weight sharing between stages,
exact fade-in endpoints, the Q head on the shared trunk, code conditioning, hand-counted
parameters, save/reload, and a JAX build without TensorFlow."""

import ast
import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan.networks import (
    NetworkConfig,
    ProgressiveDiscriminator,
    ProgressiveGenerator,
    code_gain,
    compute_code_parts,
    count_parameters,
    make_code_batch,
)

ROOT = Path(__file__).resolve().parents[2]
BATCH = 4
# Widths 16, 16, 8 at 4, 8, 16; continuous code 0 enters block 4, code 1 block 8.
CONFIG = NetworkConfig(final_resolution=16, latent_size=8, continuous_codes=2, fmap_base=64,
                       fmap_max=16, mbstd_group_size=2, q_units=8)
STAGES = [(4, False), (8, False), (8, True), (16, False), (16, True)]


@pytest.fixture(scope="module")
def generator():
    return ProgressiveGenerator(CONFIG)


@pytest.fixture(scope="module")
def discriminator():
    return ProgressiveDiscriminator(CONFIG)


def make_inputs(alpha=0.5, seed=0, config=CONFIG, **changes):
    inputs = make_code_batch(seed, BATCH, config) | changes
    return inputs | {"alpha": np.full((BATCH, 1), alpha, np.float32)}


def generate(model, inputs) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(inputs))


def criticise(model, images, alpha=0.5) -> dict:
    outputs = model({"image": images, "alpha": np.full((BATCH, 1), alpha, np.float32)})
    return {name: keras.ops.convert_to_numpy(value) for name, value in outputs.items()}


def upsample(images):
    return images.repeat(2, axis=1).repeat(2, axis=2)


def average_pool(images):
    batch, height, width, channels = images.shape
    return images.reshape(batch, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))


@pytest.mark.parametrize("resolution, fade", STAGES)
def test_each_stage_has_the_documented_shapes(generator, discriminator, resolution, fade):
    images = generate(generator.build(resolution, fade), make_inputs())
    assert images.shape == (BATCH, resolution, resolution, 3)
    outputs = criticise(discriminator.build(resolution, fade), images)
    assert {name: value.shape for name, value in outputs.items()} == {
        "score": (BATCH, 1), "categorical_logits": (BATCH, 7),
        "continuous_mean": (BATCH, 2), "continuous_log_std": (BATCH, 2)}


def test_default_widths_follow_karras_table():
    widths = {resolution: NetworkConfig().filters_at(resolution)
              for resolution in NetworkConfig().resolutions}
    assert widths == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32}
    assert [CONFIG.filters_at(resolution) for resolution in CONFIG.resolutions] == [16, 16, 8]


@pytest.mark.parametrize("codes, final, split, parts", [
    (4, 512, "blocks", {4: (0, 1), 8: (1, 2), 16: (2, 3), 32: (3, 4)}),
    (5, 8, "blocks", {4: (0, 3), 8: (3, 5)}),
    (10, 512, "blocks", {4: (0, 2), 8: (2, 4), 16: (4, 5), 32: (5, 6), 64: (6, 7),
                         128: (7, 8), 256: (8, 9), 512: (9, 10)}),
    (4, 512, "input", {}),
])
def test_code_parts_follow_the_documented_rule(codes, final, split, parts):
    config = NetworkConfig(final_resolution=final, continuous_codes=codes, code_split=split)
    assert compute_code_parts(config) == parts


@pytest.mark.parametrize("changes, message", [
    ({"final_resolution": 48}, "power of two"), ({"final_resolution": 2}, "power of two"),
    ({"continuous_codes": 0}, "continuous_codes"), ({"clinical_codes": -1}, "clinical"),
    ({"code_split": "everywhere"}, "code_split"),
])
def test_invalid_configs_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig(**changes)


def test_build_rejects_impossible_stages(generator, discriminator):
    for network in (generator, discriminator):
        with pytest.raises(ValueError, match="4x4 has none"):
            network.build(4, fade=True)
        with pytest.raises(ValueError, match="resolution must be one of"):
            network.build(32)


def block_variable_ids(model, prefix):
    return {id(variable) for layer in model.layers if layer.name.startswith(prefix)
            for variable in layer.weights}


def test_later_stages_reuse_earlier_blocks_variables(generator, discriminator):
    for network, prefix in ((generator, "generator_block"), (discriminator, "discriminator")):
        small, large = network.build(8, fade=True), network.build(16, fade=False)
        shared = block_variable_ids(small, prefix)
        assert shared == {id(v) for r in (4, 8) for v in network.blocks[r].weights}
        assert shared < {id(variable) for variable in large.weights}


def test_fade_at_alpha_zero_is_exactly_the_upsampled_previous_stage(generator):
    inputs = make_inputs(alpha=0.0)
    previous = generate(generator.build(4), inputs)
    np.testing.assert_array_equal(generate(generator.build(8, fade=True), inputs),
                                  upsample(previous))


def test_fade_at_alpha_one_ignores_the_previous_to_rgb():
    generator = ProgressiveGenerator(CONFIG)  # its weights are changed below
    fading, stable = generator.build(8, fade=True), generator.build(8)
    inputs, halfway = make_inputs(alpha=1.0), make_inputs(alpha=0.5)
    before, before_halfway = generate(fading, inputs), generate(fading, halfway)
    np.testing.assert_array_equal(before, generate(stable, inputs))
    kernel = generator.to_rgb[4].kernel
    kernel.assign(np.random.default_rng(1).normal(size=kernel.shape).astype("float32"))
    np.testing.assert_array_equal(generate(fading, inputs), before)
    assert not np.allclose(generate(fading, halfway), before_halfway)


def test_discriminator_fade_endpoints(discriminator):
    images = np.random.default_rng(2).normal(size=(BATCH, 8, 8, 3)).astype("float32")
    fading = discriminator.build(8, fade=True)
    old = criticise(discriminator.build(4), average_pool(images))
    for name, value in criticise(fading, images, alpha=0.0).items():
        np.testing.assert_allclose(value, old[name], rtol=1e-5, atol=1e-6)
    new = criticise(discriminator.build(8), images)
    for name, value in criticise(fading, images, alpha=1.0).items():
        np.testing.assert_array_equal(value, new[name])


def test_critic_and_q_head_both_train_the_shared_trunk(discriminator):
    model = discriminator.build(8, fade=True)
    images = tf.random.normal((BATCH, 8, 8, 3), seed=3)
    trunk = discriminator.blocks[4].trainable_variables
    q_head = discriminator.heads["categorical_logits"].trainable_variables
    for output in ("score", "categorical_logits", "continuous_mean"):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(model({"image": images, "alpha": tf.fill((BATCH, 1), 0.5)})
                                  [output] ** 2)
        gradients = tape.gradient(value, trunk + q_head)
        assert all(gradient is not None and np.any(gradient.numpy() != 0)
                   for gradient in gradients[:len(trunk)]), output
        assert (gradients[-1] is None) == (output != "categorical_logits"), output


def changed_image(generator, resolution, **changes):
    model = generator.build(resolution)
    return not np.array_equal(generate(model, make_inputs()),
                              generate(model, make_inputs(**changes)))


def test_every_code_conditions_the_image(generator):
    codes = make_code_batch(0, BATCH, CONFIG)
    other_class = np.roll(codes["categorical"], 1, axis=1)
    assert changed_image(generator, 16, categorical=other_class)
    assert changed_image(generator, 16, noise=codes["noise"] + 1.0)
    for index in range(CONFIG.continuous_codes):
        continuous = codes["continuous"].copy()
        continuous[:, index] = -continuous[:, index]
        assert changed_image(generator, 16, continuous=continuous), index


def test_the_class_modulates_every_block(generator):
    """Blocks mode: changing only the class changes each block's output given the same
    input features (the class does not have to survive from the 4x4 input)."""
    features = np.random.default_rng(1).normal(size=(BATCH, 4, 4, 16)).astype("float32")
    codes = make_code_batch(0, BATCH, CONFIG)
    for resolution, width in ((8, 16), (16, 16)):
        inputs = features if resolution == 8 else np.repeat(np.repeat(features, 2, 1), 2, 2)
        code = np.concatenate([codes["categorical"], codes["continuous"]], axis=1)
        other = np.concatenate([np.roll(codes["categorical"], 1, axis=1),
                                codes["continuous"]], axis=1)
        block = generator.blocks[resolution]
        assert block.inputs[0].shape[-1] == width
        assert not np.allclose(generate(block, [inputs, code]), generate(block, [inputs, other]))


def test_class_code_weighs_like_the_noise_at_initialisation():
    """code_gain: at initialisation the class explains a sizeable share of the image
    variance (with Karras's joint pixel norm it was about 1 / latent_size)."""
    config = dataclasses.replace(CONFIG, latent_size=64)
    model = ProgressiveGenerator(config).build(16)
    rows, columns = config.num_classes, 16
    codes = make_code_batch(3, rows * columns, config,
                            classes=np.repeat(np.arange(rows), columns))
    for name in ("noise", "continuous"):
        codes[name] = np.tile(codes[name][:columns], (rows, 1))
    images = generate(model, codes | {"alpha": np.ones((rows * columns, 1), np.float32)})
    images = images.reshape(rows, columns, -1)
    between = images.mean(axis=1).var(axis=0).mean()  # variance of the class means
    within = images.var(axis=1).mean()                 # variance over noise, per class
    assert between / (between + within) > 0.1


def test_code_gain_gives_each_part_the_noise_norm():
    assert code_gain(CONFIG, "categorical") == pytest.approx(np.sqrt(8))
    assert code_gain(CONFIG, "continuous") == pytest.approx(np.sqrt(3 * 8 / 2))
    rng = np.random.default_rng(0)
    codes = rng.uniform(-1, 1, (20000, 2)) * code_gain(CONFIG, "continuous")
    assert np.mean(np.sum(codes**2, axis=1)) == pytest.approx(8, rel=0.02)
    with pytest.raises(ValueError, match="clinical"):
        code_gain(CONFIG, "clinical")


def test_a_continuous_code_enters_at_its_own_block(generator):
    continuous = make_code_batch(0, BATCH, CONFIG)["continuous"] * [1.0, -1.0]  # flip code 1
    assert not changed_image(generator, 4, continuous=continuous.astype("float32"))
    assert changed_image(generator, 8, continuous=continuous.astype("float32"))
    with_input_split = ProgressiveGenerator(dataclasses.replace(CONFIG, code_split="input"))
    assert changed_image(with_input_split, 4, continuous=continuous.astype("float32"))


def test_clinical_codes_add_an_input_and_a_q_output():
    config = dataclasses.replace(CONFIG, clinical_codes=5)
    generator = ProgressiveGenerator(config)
    model = generator.build(8, fade=True)
    assert "clinical" in model.input
    clinical = np.random.default_rng(4).normal(size=(BATCH, 5)).astype("float32")
    inputs = make_inputs(config=config, clinical=clinical)
    changed = make_inputs(config=config, clinical=clinical[::-1].copy())
    assert not np.array_equal(generate(model, inputs), generate(model, changed))
    outputs = criticise(ProgressiveDiscriminator(config).build(8), generate(model, inputs))
    assert outputs["clinical_logits"].shape == (BATCH, 5)


def test_parameter_counts_match_a_hand_count(generator, discriminator):
    conv = lambda inputs, outputs, size=3: size * size * inputs * outputs + outputs  # noqa: E731
    dense = lambda inputs, outputs: inputs * outputs + outputs  # noqa: E731
    # 4x4: noise 8 + categorical 7 -> 4*4*16; [class 7, code 0] -> scale and shift for 16
    # maps; conv. Each later block: [class, its part] -> modulation between its convs.
    assert count_parameters(generator.blocks[4]) == dense(15, 256) + dense(8, 32) + conv(16, 16)
    assert count_parameters(generator.blocks[8]) == 2 * conv(16, 16) + dense(8, 32)
    assert count_parameters(generator.blocks[16]) == conv(16, 8) + conv(8, 8) + dense(7, 16)
    assert count_parameters(generator.to_rgb[16]) == conv(8, 3, size=1)
    # Trunk: minibatch stddev adds one map; then conv and dense to 16.
    assert count_parameters(discriminator.blocks[4]) == conv(17, 16) + dense(256, 16)
    heads = dense(16, 1) + dense(16, 8) + dense(8, 7) + 2 * dense(8, 2)
    assert sum(count_parameters(layer) for layer in discriminator.heads.values()) == heads
    parts = [generator.blocks[4], generator.blocks[8], generator.to_rgb[4], generator.to_rgb[8]]
    assert count_parameters(generator.build(8, fade=True)) == sum(map(count_parameters, parts))


@pytest.mark.parametrize("network", ["generator", "discriminator"])
def test_saved_stage_reloads_with_the_same_outputs(generator, discriminator, network, tmp_path):
    if network == "generator":
        model, inputs = generator.build(8, fade=True), make_inputs()
    else:
        images = np.random.default_rng(5).normal(size=(BATCH, 8, 8, 3)).astype("float32")
        model = discriminator.build(8, fade=True)
        inputs = {"image": images, "alpha": np.full((BATCH, 1), 0.5, np.float32)}
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    expected, got = keras.tree.flatten(model(inputs)), keras.tree.flatten(reloaded(inputs))
    for left, right in zip(expected, got, strict=True):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))


def test_networks_never_import_tensorflow():
    for path in ("gan/networks.py", "gan/codes.py"):
        tree = ast.parse((ROOT / path).read_text())
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names]
        names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [name for name in names if name and name.split(".")[0] == "tensorflow"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_networks_build_and_differentiate_under_jax_without_tensorflow():
    script = textwrap.dedent("""
        import sys
        import jax, keras, numpy as np
        from gan.networks import (NetworkConfig, ProgressiveDiscriminator,
                                  ProgressiveGenerator, make_code_batch)
        assert keras.backend.backend() == "jax"
        config = NetworkConfig(final_resolution=8, latent_size=8, continuous_codes=2,
                               clinical_codes=3, fmap_base=32, fmap_max=8, q_units=8)
        generator = ProgressiveGenerator(config).build(8, fade=True)
        critic = ProgressiveDiscriminator(config).build(8, fade=True)
        alpha = np.full((4, 1), 0.3, np.float32)
        codes = make_code_batch(0, 4, config, clinical=np.zeros((4, 3), np.float32))
        images = np.asarray(generator(codes | {"alpha": alpha}))
        assert images.shape == (4, 8, 8, 3)
        def score(values):
            outputs, _ = critic.stateless_call(values, [], {"image": images, "alpha": alpha})
            return outputs["score"].sum() + outputs["clinical_logits"].sum()
        grads = jax.jit(jax.grad(score))([v.value for v in critic.trainable_variables])
        assert all(np.isfinite(np.asarray(g)).all() for g in grads)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("jax ok")
    """)
    environment = os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=environment, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax ok" in result.stdout
