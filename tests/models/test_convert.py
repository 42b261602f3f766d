"""The torch -> Keras converter: converted weights reproduce the logits real torchvision / timm
models produced (reference data from DERMNET_TORCH_REFERENCE), the weights file round trip,
the weights="imagenet" cache, and the error messages."""

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

from dermnet.models.convert import (
    compute_keras_layout,
    convert_state_dict,
    load_state_dict,
    main,
    save_weights_atomic,
    torch_key,
)
from dermnet.models.resnet import build_resnet34

# reference file -> (architecture, tolerance on max |keras - torch| / max |torch| of the logits).
# ResNet34 matches to 5e-7. SE-ResNet50 with these random weights is ill-conditioned: its SE
# gates amplify float32 rounding, so even Keras in float64 sits 7.7e-4 from torch's float32
# logits and Keras float32 1.4e-3; perturbing the weights by one float32 rounding (6e-8) moves
# float64 logits by up to 2.3e-4. A real error is far larger: batch-norm epsilon 1e-4 instead of
# 1e-5 gives 0.19.
REFERENCES = {
    "torchvision_resnet34.json": ("resnet34", 1e-4),
    "timm_resnet34.json": ("resnet34", 1e-4),
    "timm_seresnet50.json": ("seresnet50", 5e-3),
}


@pytest.fixture(scope="module")
def reference_dir() -> Path:
    """The folder of torch reference outputs (set by .ci/run); skips when unavailable."""
    value = os.environ.get("DERMNET_TORCH_REFERENCE")
    if not value or not Path(value).is_dir():
        pytest.skip("DERMNET_TORCH_REFERENCE does not point at the torch reference folder")
    return Path(value)


def make_reference_weight(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The reference README's rule: one generator per key, seeded with crc32(key)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    if key.endswith("running_var"):
        values = rng.uniform(0.5, 1.5, shape)
    elif key.endswith(("running_mean", "bias")):
        values = rng.normal(0.0, 0.1, shape)
    elif len(shape) == 1:  # batch-norm scale
        values = rng.uniform(0.5, 1.5, shape)
    else:
        gain = 2.0 if len(shape) == 4 else 1.0
        values = rng.normal(0.0, np.sqrt(gain / np.prod(shape[1:])), shape)
    return values.astype(np.float32)


def make_reference_input() -> np.ndarray:
    """The reference input, NCHW as torch saw it, transposed to NHWC."""
    images = np.random.default_rng(0).uniform(0, 1, (2, 3, 224, 224)).astype(np.float32)
    return images.transpose(0, 2, 3, 1)


def make_state_dict_for(model: keras.Model) -> dict[str, np.ndarray]:
    """A torch-layout state_dict that fits ``model``, by the reference rule."""
    state_dict = {}
    for variable in model.weights:
        key = torch_key(variable)
        keras_shape = tuple(variable.shape)
        torch_shape = {4: (3, 2, 0, 1), 2: (1, 0), 1: (0,)}[len(keras_shape)]
        state_dict[key] = make_reference_weight(key, tuple(keras_shape[a] for a in torch_shape))
    return state_dict


def run(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(images, training=False))


@pytest.mark.parametrize("file_name", sorted(REFERENCES))
def test_converted_weights_reproduce_torch_logits(reference_dir, file_name):
    architecture, tolerance = REFERENCES[file_name]
    reference = json.loads((reference_dir / file_name).read_text())
    state_dict = {k: make_reference_weight(k, tuple(s)) for k, s in reference["state_dict"]}
    state_dict["bn1.num_batches_tracked"] = np.array(7)  # torch buffers carry it; ignored
    model = convert_state_dict(state_dict, architecture)

    logits = run(model, make_reference_input())
    expected = np.asarray(reference["logits"], dtype=np.float32)
    error = np.abs(logits - expected).max() / np.abs(expected).max()
    assert error <= tolerance, f"{file_name}: relative error {error:.2e}"
    np.testing.assert_array_equal(logits.argmax(axis=1), expected.argmax(axis=1))
    # torch's parameters() count = Keras trainable weights (BN moving stats are torch buffers)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == reference["num_parameters"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A resnet34 .safetensors checkpoint with torch keys and layouts."""
    state_dict = make_state_dict_for(build_resnet34(input_shape=(32, 32, 3)))
    path = tmp_path_factory.mktemp("checkpoint") / "resnet34.safetensors"
    save_file(state_dict, str(path))
    return path, state_dict


@pytest.fixture(scope="module")
def converted_file(checkpoint, tmp_path_factory) -> Path:
    """The checkpoint converted by the command line, with its fc top."""
    out = tmp_path_factory.mktemp("converted") / "resnet34.weights.h5"
    assert main([str(checkpoint[0]), "--arch", "resnet34", "--out", str(out)]) == 0
    return out


def assert_weights_equal_state_dict(model: keras.Model, state_dict: dict) -> None:
    """Every Keras variable holds its state_dict entry, in Keras layout."""
    for variable in model.weights:
        expected = compute_keras_layout(state_dict[torch_key(variable)])
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), expected)


@pytest.mark.slow
def test_converted_file_loads_into_builder(checkpoint, converted_file, tmp_path, monkeypatch):
    images = np.random.default_rng(1).uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    loaded = build_resnet34(input_shape=(64, 64, 3), weights=str(converted_file))
    assert_weights_equal_state_dict(loaded, checkpoint[1])

    # The cached full file serves weights="imagenet"; a headless model skips its fc top.
    (tmp_path / "resnet34_imagenet.weights.h5").write_bytes(converted_file.read_bytes())
    monkeypatch.setenv("DERMNET_WEIGHTS_DIR", str(tmp_path))
    headless = build_resnet34(input_shape=(64, 64, 3), include_top=False, weights="imagenet")
    assert_weights_equal_state_dict(headless, checkpoint[1])
    features = keras.Model(loaded.input, loaded.get_layer("layer4_2_relu2").output)
    np.testing.assert_array_equal(run(headless, images), run(features, images))


@pytest.mark.slow
def test_no_top_file_loads_into_headless_model(checkpoint, tmp_path, monkeypatch):
    path, state_dict = checkpoint
    monkeypatch.setenv("DERMNET_WEIGHTS_DIR", str(tmp_path))
    assert main([str(path), "--arch", "resnet34", "--install", "--no-top"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["resnet34_imagenet_notop.weights.h5"]
    model = build_resnet34(input_shape=(32, 32, 3), include_top=False, weights="imagenet")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("layer4_2_conv2").kernel),
        compute_keras_layout(state_dict["layer4.2.conv2.weight"]),
    )
    with pytest.raises(FileNotFoundError, match="resnet34_imagenet.weights.h5"):
        build_resnet34(weights="imagenet")  # a model with a top needs the full file


def test_imagenet_without_cached_file_explains_conversion(tmp_path, monkeypatch):
    monkeypatch.setenv("DERMNET_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        build_resnet34(weights="imagenet")
    message = str(error.value)
    assert str(tmp_path / "resnet34_imagenet.weights.h5") in message
    assert "python -m dermnet.models.convert CHECKPOINT --arch resnet34 --install" in message
    assert "resnet34-b627a593.pth" in message


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, on the failed load
def test_mismatched_weights_file_names_the_file(converted_file):
    with pytest.raises(ValueError, match="resnet34.weights.h5"):
        build_resnet34(input_shape=(32, 32, 3), classes=7, weights=str(converted_file))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda sd: sd.pop("layer3.1.bn2.running_var"), "missing keys: layer3.1.bn2.running_var"),
        (lambda sd: sd.update({"layer9.0.conv1.weight": np.zeros(1)}), "layer9.0.conv1.weight"),
        (
            lambda sd: sd.update({"layer2.0.conv1.weight": np.zeros((128, 64, 1, 1))}),
            r"wrong shapes: layer2.0.conv1.weight \(128, 64, 1, 1\) \(needs \(128, 64, 3, 3\)\)",
        ),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_state_dict_that_does_not_fit_names_the_key(checkpoint, change, message):
    state_dict = dict(checkpoint[1])
    change(state_dict)
    with pytest.raises(ValueError, match=message):
        convert_state_dict(state_dict, "resnet34")


def test_load_state_dict_reads_safetensors_and_rejects_others(checkpoint, tmp_path, monkeypatch):
    path, state_dict = checkpoint
    loaded = load_state_dict(path)
    assert loaded.keys() == state_dict.keys()
    np.testing.assert_array_equal(loaded["fc.weight"], state_dict["fc.weight"])
    with pytest.raises(ValueError, match="unsupported checkpoint type"):
        load_state_dict(_touch(tmp_path / "weights.npz"))
    with pytest.raises(ValueError, match="could not read checkpoint"):
        load_state_dict(_touch(tmp_path / "corrupt.safetensors"))
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    with pytest.raises(ImportError, match="needs PyTorch"):
        load_state_dict(_touch(tmp_path / "resnet34.pth"))


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def test_command_line_errors_exit_nonzero(tmp_path, capsys):
    assert (
        main(
            [
                str(tmp_path / "absent.safetensors"),
                "--arch",
                "resnet34",
                "--out",
                str(tmp_path / "x.weights.h5"),
            ]
        )
        == 1
    )
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "absent.safetensors"), "--arch", "resnet50", "--install"])
    assert exit_info.value.code == 2  # argparse rejects an unknown architecture


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    class FailingModel:
        def save_weights(self, path, overwrite=True):
            Path(path).write_bytes(b"half a file")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_weights_atomic(FailingModel(), tmp_path / "resnet34.weights.h5")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=".weights.h5"):
        save_weights_atomic(FailingModel(), tmp_path / "resnet34.h5")


@pytest.mark.slow
def test_module_runs_as_a_program(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dermnet.models.convert",
            str(tmp_path / "absent.pth"),
            "--arch",
            "seresnet50",
            "--out",
            str(tmp_path / "out.weights.h5"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "checkpoint not found" in result.stderr


def test_resnet18_checkpoint_converts_by_name(tmp_path):
    """ResNet18 shares ResNet34's layer names: its torch state_dict converts key for key."""
    from dermnet.models.resnet import build_resnet18

    state_dict = make_state_dict_for(build_resnet18(input_shape=(32, 32, 3)))
    assert "layer4.1.conv2.weight" in state_dict and "layer4.2.conv1.weight" not in state_dict
    save_file(state_dict, str(tmp_path / "resnet18.safetensors"))
    out = tmp_path / "resnet18.weights.h5"
    assert main([str(tmp_path / "resnet18.safetensors"), "--arch", "resnet18",
                 "--out", str(out)]) == 0
    assert_weights_equal_state_dict(build_resnet18(input_shape=(64, 64, 3), weights=str(out)),
                                    state_dict)
