"""Convert PyTorch ResNet18 / ResNet34 / SE-ResNet50 checkpoints (torchvision or timm
state_dicts) into Keras ``.weights.h5`` files for ``build_resnet18`` / ``build_resnet34`` /
``build_seresnet50``.

Usage::

    python -m dermnet.models.convert CHECKPOINT --arch resnet34 --out resnet34.weights.h5
    python -m dermnet.models.convert CHECKPOINT --arch seresnet50 --install [--no-top]

``--install`` writes into the cache folder that ``weights="imagenet"`` reads (see
``dermnet.models.resnet``). Keras layers are named after torch modules (``layer1.0.conv1`` ->
``layer1_0_conv1``), so every Keras variable maps to one state_dict key by name; conversion fails,
listing the keys, unless every key is used and every variable is assigned with the right shape.
"""

import argparse
import os
import sys
import uuid
from pathlib import Path

import keras
import numpy as np

from dermnet.models.resnet import (
    IMAGENET_CLASSES,
    build_resnet18,
    build_resnet34,
    imagenet_weights_name,
    weights_cache_dir,
)
from dermnet.models.seresnet import build_seresnet50

BUILDERS = {"resnet18": build_resnet18, "resnet34": build_resnet34,
            "seresnet50": build_seresnet50}
# Keras variable name -> torch parameter / buffer name within the same module.
TORCH_SUFFIXES = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
# Axis order taking a torch array of each rank to Keras: OIHW -> HWIO, (out, in) -> (in, out).
KERAS_AXES = {4: (2, 3, 1, 0), 2: (1, 0), 1: (0,)}
IGNORED_SUFFIX = "num_batches_tracked"  # a batch-norm training counter, not a weight
TOP_PREFIX = "fc."  # the classifier, dropped by include_top=False
TORCH_SUFFIXES_ON_DISK = (".pth", ".pt", ".bin")
MAX_LISTED_KEYS = 20  # error messages list at most this many keys per problem


def torch_key(variable) -> str:
    """The state_dict key of a Keras variable: ``layer1_0_conv1/kernel`` ->
    ``layer1.0.conv1.weight`` (torch module names here contain no underscores)."""
    layer_name, variable_name = variable.path.split("/")[-2:]
    return f"{layer_name.replace('_', '.')}.{TORCH_SUFFIXES[variable_name]}"


def compute_keras_layout(array: np.ndarray) -> np.ndarray:
    """torch -> Keras layout: conv OIHW -> HWIO, linear (out, in) -> (in, out), vectors as is."""
    return np.transpose(array, KERAS_AXES[array.ndim])


def compute_torch_shape(variable) -> tuple[int, ...]:
    """The shape a Keras variable has in a torch state_dict (the inverse of the layout)."""
    axes = np.argsort(KERAS_AXES[len(variable.shape)])
    return tuple(int(variable.shape[axis]) for axis in axes)


def load_state_dict(path) -> dict[str, np.ndarray]:
    """Read a checkpoint as ``{key: numpy array}``: ``.safetensors`` with safetensors, or
    ``.pth`` / ``.pt`` / ``.bin`` with torch (optional). Strips DataParallel's ``module.``
    prefix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors" and path.suffix not in TORCH_SUFFIXES_ON_DISK:
        raise ValueError(
            f"unsupported checkpoint type {path.name!r}: expected .safetensors or "
            f"{', '.join(TORCH_SUFFIXES_ON_DISK)}"
        )
    reader = load_safetensors_file if path.suffix == ".safetensors" else load_torch_file
    try:
        state_dict = reader(path)
    except (ImportError, OSError):
        raise
    except Exception as error:  # corrupt files raise each library's own error types
        raise ValueError(f"could not read checkpoint {path}: {error}") from error
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def load_safetensors_file(path: Path) -> dict[str, np.ndarray]:
    """A .safetensors file as numpy arrays."""
    from safetensors.numpy import load_file

    return load_file(str(path))


def load_torch_file(path: Path) -> dict:
    """A torch pickle as numpy arrays; needs PyTorch, imported only here."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"reading {path.name} needs PyTorch (pip install torch); alternatively download the "
            "checkpoint as .safetensors (timm models on huggingface.co ship model.safetensors)"
        ) from error
    content = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(content.get(wrapper), dict):
            content = content[wrapper]
    return {
        # float() first: numpy has no bfloat16, and widening half precision is exact
        key: value.float().numpy() if value.is_floating_point() else value.numpy()
        for key, value in content.items()
        if isinstance(value, torch.Tensor)
    }


def convert_state_dict(
    state_dict: dict[str, np.ndarray],  # torch key -> array, as from load_state_dict
    architecture: str,  # "resnet18", "resnet34" or "seresnet50"
    include_top: bool = True,  # keep the fc classifier (its size is read from fc.weight)
) -> keras.Model:
    """Build the Keras model and assign every weight of ``state_dict`` to it.

    Raises ValueError listing missing keys, unused keys and shape mismatches."""
    if architecture not in BUILDERS:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {sorted(BUILDERS)}")
    top = state_dict.get(TOP_PREFIX + "weight")
    classes = IMAGENET_CLASSES if top is None else np.shape(top)[0]
    model = BUILDERS[architecture](
        input_shape=(None, None, 3), include_top=include_top, classes=classes
    )
    expected = {torch_key(variable): variable for variable in model.weights}
    check_state_dict(state_dict, expected, include_top, architecture)
    for key, variable in expected.items():
        variable.assign(compute_keras_layout(np.asarray(state_dict[key], dtype=np.float32)))
    return model


def check_state_dict(state_dict: dict, expected: dict, include_top: bool, architecture: str):
    """Raise one ValueError naming every missing key, unused key and wrong shape."""
    given = {key for key in state_dict if not key.endswith(IGNORED_SUFFIX)}
    if not include_top:
        given = {key for key in given if not key.startswith(TOP_PREFIX)}
    missing = sorted(expected.keys() - given)
    unused = sorted(given - expected.keys())
    wrong_shapes = [
        f"{key} {tuple(np.shape(state_dict[key]))} (needs {compute_torch_shape(expected[key])})"
        for key in sorted(expected.keys() & given)
        if tuple(np.shape(state_dict[key])) != compute_torch_shape(expected[key])
    ]
    problems = [
        f"{len(keys)} {kind}: {list_keys(keys)}"
        for kind, keys in [
            ("missing keys", missing),
            ("unexpected keys", unused),
            ("wrong shapes", wrong_shapes),
        ]
        if keys
    ]
    if problems:
        raise ValueError(
            f"state_dict does not fit {architecture} (is it a {architecture} checkpoint?):\n  "
            + "\n  ".join(problems)
        )


def list_keys(keys: list[str]) -> str:
    """The first MAX_LISTED_KEYS keys, comma separated."""
    more = f", ... ({len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else ""
    return ", ".join(keys[:MAX_LISTED_KEYS]) + more


def check_output_name(path) -> Path:
    """Keras writes weights only to names ending in ``.weights.h5``."""
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"output must end with .weights.h5 (Keras requires it): {path}")
    return path


def save_weights_atomic(model: keras.Model, path) -> Path:
    """``model.save_weights`` to a temporary file beside ``path``, then rename: a crash never
    leaves a half-written file where ``weights="imagenet"`` would find it."""
    path = check_output_name(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hidden unique name in the same folder, so the rename stays on one file system.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp.weights.h5")
    try:
        model.save_weights(str(temporary), overwrite=True)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def install_path(model: keras.Model, architecture: str, include_top: bool) -> Path:
    """Where ``--install`` writes; only a 1000-class ImageNet head may go there."""
    if include_top and model.output_shape[-1] != IMAGENET_CLASSES:
        raise ValueError(
            f"--install expects the 1000-class ImageNet classifier, this checkpoint has "
            f"{model.output_shape[-1]} classes; use --no-top or --out"
        )
    return weights_cache_dir() / imagenet_weights_name(architecture, include_top)


def parse_arguments(argv) -> argparse.Namespace:
    """The command line of ``python -m dermnet.models.convert``."""
    parser = argparse.ArgumentParser(
        prog="python -m dermnet.models.convert",
        description="Convert a torchvision/timm ResNet34 or SE-ResNet50 checkpoint to Keras.",
    )
    parser.add_argument("checkpoint", type=Path, help=".safetensors, .pth, .pt or .bin file")
    parser.add_argument("--arch", required=True, choices=sorted(BUILDERS))
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="output FILE.weights.h5")
    target.add_argument(
        "--install",
        action="store_true",
        help=f"write to the weights='imagenet' cache ({weights_cache_dir()})",
    )
    parser.add_argument("--no-top", action="store_true", help="drop the fc classifier")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Convert, write atomically, report; errors go to stderr with exit status 1."""
    arguments = parse_arguments(argv)
    include_top = not arguments.no_top
    try:
        if arguments.out:  # fail before the slow part
            check_output_name(arguments.out)
        state_dict = load_state_dict(arguments.checkpoint)
        model = convert_state_dict(state_dict, arguments.arch, include_top)
        out = arguments.out or install_path(model, arguments.arch, include_top)
        save_weights_atomic(model, out)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"converted {arguments.checkpoint} ({arguments.arch}, {len(model.weights)} tensors, "
        f"{model.count_params():,} values) -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
