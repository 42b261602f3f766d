"""Run configuration: a frozen dataclass tree, named presets, ``--set`` overrides, JSON.

    Config
      data:     DataConfig      where images come from, split, resolution, batching
        augment:  AugmentConfig (dermnet.data.augment) training-time augmentation
      model:    ModelConfig     backbone, weights, head and clinical branch
      training: TrainingConfig  optimiser, schedule, phases, stopping, distribution

Every run writes its config as ``config.json``; ``load_config`` reads it back, so a run can
be repeated exactly. ``apply_overrides(config, ["training.epochs=5"])`` changes fields by
dotted path and rejects unknown keys and values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from dermnet.data.augment_config import AugmentConfig
from dermnet.runs.tasks import DEFAULT_TASK, TASKS

CONFIG_VERSION = 1


def check_choices(node, choices: dict[str, tuple]) -> None:
    """Reject a string field whose value is not one of its documented choices."""
    for name, valid in choices.items():
        if getattr(node, name) not in valid:
            raise ValueError(f"{type(node).__name__}.{name} must be one of {', '.join(valid)}; "
                             f"got {getattr(node, name)!r}")


def check_ranges(node, ranges: dict[str, str]) -> None:
    """Reject a number outside its interval, written as in mathematics: ``"(0, inf)"``,
    ``"[0, 1)"``. NaN lies in no interval; None (an optional field left unset) passes."""
    for name, interval in ranges.items():
        value = getattr(node, name)
        if value is None:
            continue
        low, high = (float(part) for part in interval[1:-1].split(","))
        above = value > low if interval[0] == "(" else value >= low
        below = value < high if interval[-1] == ")" else value <= high
        if not (above and below):
            raise ValueError(f"{type(node).__name__}.{name} must be in {interval}, got {value!r}")


RESIZE_MODES = ("stretch", "crop")  # dermnet.data.pipeline.resize_image
COLOUR_CONSTANCY = ("none", "shades_of_gray")  # dermnet.models.colour


@dataclass(frozen=True)
class DataConfig:
    # "ham10000": 7 dermoscopic classes, one softmax (study 1); "clinical-photos": clinical
    # photographs of 5 diseases, one sigmoid per binary task (study 2).
    task: str = DEFAULT_TASK
    data_dir: str = ""                   # dataset folder; "" = the task's phantom dataset
    phantom_images: int = 1000           # size of the phantom dataset generated when data_dir=""
    phantom_patients: int = 300          # clinical photos: patients of the phantom dataset
    # Clinical photos: the skin-cropped copy written by `python -m preprocess crop DATA_DIR
    # CROP_DIR` (its manifest.csv maps the photos); "" trains on the original photos.
    crop_dir: str = ""
    image_size: tuple[int, int] = (224, 300)  # (H, W); the paper's low 224x300 / high 450x600
    clinical: bool = False               # feed age / sex / site through the clinical branch
    folds: int = 5                       # K of the K-fold split (the paper's 5 repeats)
    fold: int = 0                        # which fold validates this run
    test_fraction: float = 0.17          # held-out test share, as in the paper
    split_seed: int = 0                  # seed of the split (fixed across a grid's runs)
    split_by: str = "lesion"             # "lesion" (no leakage) or "image" (the paper's)
    # Leave-one-source-out: source collections (HAM10000's `dataset` column: vidir_molemax,
    # vidir_modern, rosendahl, vienna_dias) held out whole as the "holdout" split, never
    # trained on: the cross-source test of the same model whose "test" split is in-source.
    holdout_sources: tuple[str, ...] = ()
    # A metadata CSV with image_id and `dataset` columns (the Dataverse release's), for a data
    # folder whose own metadata lacks the source column; "" = the folder's own metadata.
    sources_csv: str = ""
    # How an image of another aspect ratio meets the model's input: "stretch" (resize the
    # whole image, as the studies and MedMNIST did) or "crop" (centre-crop to the input's
    # aspect ratio, then resize: shapes are not distorted).
    resize: str = "stretch"
    # Lesion-centred crop (dermnet.data.lesion_box): 0 = off; > 0 = each image is first cut to
    # its lesion box, estimated from the pixels alone (no mask), moved out by this share of
    # the box's size on each side and grown to the input's aspect ratio: image banks that
    # frame lesions at different scales then meet the model at one scale.
    lesion_crop: float = 0.0
    batch_size: int = 32                 # per replica; the global batch is this x replicas
    cache: str = "memory"                # uint8 decode cache: "memory", "none" or a file prefix
    # Imbalance: "none", "class_weights" (loss weighted by inverse class frequency) or
    # "balanced" (training rows of smaller classes repeated up to the largest class).
    sampling: str = "none"
    augment: AugmentConfig = field(default_factory=AugmentConfig.paper)  # training only

    def __post_init__(self):
        check_choices(self, {"task": TASKS, "split_by": ("lesion", "image"),
                              "sampling": ("none", "class_weights", "balanced"),
                              "resize": RESIZE_MODES})
        if not 0 <= self.fold < self.folds:
            raise ValueError(f"DataConfig.fold must be in 0..{self.folds - 1}, got {self.fold}")
        if self.batch_size < 1 or min(self.image_size) < 1:
            raise ValueError("DataConfig.batch_size and image_size must be positive")
        check_ranges(self, {"test_fraction": "(0, 1)", "phantom_images": "[1, inf)",
                            "phantom_patients": "[1, inf)", "folds": "[2, inf)"})
        if self.lesion_crop != 0 and not 0 < self.lesion_crop <= 2:
            raise ValueError(f"DataConfig.lesion_crop must be 0 (off) or in (0, 2], got "
                             f"{self.lesion_crop}")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet50"           # a name from dermnet.models.backbones.list_backbones()
    weights: str | None = "imagenet"     # "imagenet", None (from scratch) or a weights file
    dropout: float = 0.5                 # head dropout, as in the paper
    clinical_units: tuple[int, ...] = (64,)  # widths of the clinical branch's Dense layers
    clinical_dropout: float = 0.25       # dropout inside the clinical branch
    clinical_mask_rate: float = 0.1      # share of training samples whose clinical data is hidden
    # Clinical photos: the study's VGG16 variant, "p" (ImageNet, conv layers frozen), "n"
    # (from scratch), "ps" / "ns" (the same behind a spatial transformer).
    variant: str = "p"
    # Colour constancy inside the model, so training, evaluation and prediction all apply it:
    # "shades_of_gray" divides each channel by its Minkowski p-norm (p = 6; Finlayson and
    # Trezzi 2004), as the winning ISIC 2019 entry did, removing the illuminant and camera
    # cast that differ between image banks; "none" leaves the pixels alone.
    colour_constancy: str = "none"

    def __post_init__(self):
        check_choices(self, {"variant": ("p", "n", "ps", "ns"),
                             "colour_constancy": COLOUR_CONSTANCY})
        check_ranges(self, {"dropout": "[0, 1)", "clinical_dropout": "[0, 1)",
                            "clinical_mask_rate": "[0, 1]"})


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 90                     # total epochs, both phases (the paper: 90)
    optimizer: str = "adam"              # "adam", "adamw" or "sgd" (momentum 0.9)
    learning_rate: float = 1e-4          # peak learning rate of the main phase
    head_learning_rate: float = 1e-3     # learning rate while the backbone is frozen
    weight_decay: float = 0.0            # decoupled weight decay (adamw, sgd)
    schedule: str = "cosine"             # "cosine" decay to 0 or "constant", after warm-up
    warmup_epochs: int = 1               # linear warm-up of the main phase
    freeze_epochs: int = 3               # phase 1 epochs with the backbone frozen (pretrained only)
    unfreeze_fraction: float = 0.5       # top share of backbone layers trained in phase 2
    label_smoothing: float = 0.0         # categorical label smoothing
    # Override the backbone's BatchNorm momentum (Keras Applications use 0.99). Short runs
    # from scratch need a faster one (0.9): otherwise the moving statistics that validation
    # uses lag the weights and the network saturates at inference. None keeps the default.
    batchnorm_momentum: float | None = None
    # With several replicas, BatchNorm statistics over the global batch (SyncBatchNorm):
    # per-replica batches can be tiny at 450x600, and every replica and worker then keeps
    # the same moving statistics (otherwise each keeps its own, and only one is saved).
    sync_batchnorm: bool = True
    monitor: str = "val_balanced_accuracy"  # model selection / early stopping metric
    patience: int = 20                   # early-stopping patience in epochs; 0 disables it
    seed: int = 0                        # weights init, shuffling and augmentation
    deterministic: bool = False          # TF op determinism, no Grappler (exact repeats on CPU)
    strategy: str = "auto"               # auto | mirrored | multiworker | one_device | default
    mixed_precision: bool = False        # float16 compute on GPUs (mixed_float16)
    jit: bool = False                    # XLA-compile the train step (jit_compile=True)

    def __post_init__(self):
        check_choices(self, {
            "optimizer": ("adam", "adamw", "sgd"), "schedule": ("cosine", "constant"),
            "monitor": ("val_balanced_accuracy", "val_macro_auc", "val_accuracy", "val_loss"),
            "strategy": ("auto", "mirrored", "multiworker", "one_device", "default"),
        })
        if self.epochs < 1 or self.freeze_epochs < 0 or self.warmup_epochs < 0:
            raise ValueError("TrainingConfig: epochs must be >= 1, freeze/warm-up epochs >= 0")
        check_ranges(self, {"unfreeze_fraction": "(0, 1]", "learning_rate": "(0, inf)",
                            "head_learning_rate": "(0, inf)", "weight_decay": "[0, inf)",
                            "label_smoothing": "[0, 1)", "batchnorm_momentum": "[0, 1)"})


@dataclass(frozen=True)
class Config:
    preset: str = "default"              # the preset this config started from
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    version: int = CONFIG_VERSION        # config layout version, checked on load


def _paper() -> Config:
    """The first study's settings: ImageNet weights, dropout 0.5, rotation / zoom / shear /
    flips and camera-like distortions, 5 folds, 90 epochs. It used no class weighting."""
    return Config(preset="paper", data=DataConfig(augment=AugmentConfig.paper()),
                  model=ModelConfig(dropout=0.5, weights="imagenet"),
                  training=TrainingConfig(epochs=90))


def _smoke() -> Config:
    """Seconds on a CPU: a tiny phantom set, small images, MobileNet from scratch, 2 epochs."""
    return Config(
        preset="smoke",
        data=DataConfig(phantom_images=120, image_size=(64, 80), batch_size=16,
                        augment=AugmentConfig.geometric()),
        model=ModelConfig(backbone="mobilenet", weights=None, clinical_units=(16,)),
        training=TrainingConfig(epochs=2, learning_rate=1e-3, warmup_epochs=0,
                                freeze_epochs=0, patience=0),
    )


def _demo() -> Config:
    """`make demo`: a few minutes on a CPU, enough for the clinical branch to show."""
    return Config(
        preset="demo",
        data=DataConfig(phantom_images=1500, image_size=(96, 128), batch_size=32,
                        sampling="class_weights", augment=AugmentConfig.geometric()),
        model=ModelConfig(backbone="mobilenet", weights=None, clinical_units=(32,)),
        training=TrainingConfig(epochs=8, learning_rate=2e-3, warmup_epochs=1,
                                freeze_epochs=0, patience=0, batchnorm_momentum=0.9),
    )


def _cpu_real() -> Config:
    """The best seven-class classifier trained from scratch on 2 CPU cores in under an hour,
    on the real HAM10000 images (--data-dir ham10000_200x150), chosen by measured trials
    (docs/real-images.md): a half-width ResNet18 at 75x100 (half the 200x150 images: twice
    the epochs of 112x150 in the same time, and better there), the training split
    oversampled to balanced classes (faster and better than a class-weighted loss), light
    regularisation (dropout 0.2, no shear: short runs underfit), rotation / zoom / shift /
    flips, AdamW with warm-up and cosine decay; 10 epochs of the balanced split."""
    return Config(
        preset="cpu-real",
        data=DataConfig(image_size=(75, 100), batch_size=32, sampling="balanced",
                        augment=dataclasses.replace(AugmentConfig.geometric(), shear=0.0)),
        model=ModelConfig(backbone="resnet18-half", weights=None, dropout=0.2,
                          clinical_units=(32,)),
        training=TrainingConfig(epochs=10, optimizer="adamw", learning_rate=2e-3,
                                weight_decay=0.05, warmup_epochs=1, freeze_epochs=0,
                                patience=0),
    )


def _dermamnist() -> Config:
    """MedMNIST v2's DermaMNIST protocol (Yang et al. 2023) from the real images: 28x28
    inputs and an IMAGE-level random 7:1:2 split (8 folds, 20% test, validation fold 0),
    which puts images of one lesion on both sides, as the first study's split did. For the
    same settings without that leak: --set data.split_by=lesion. The CIFAR-stem ResNet18
    (MedMNIST's "ResNet-18 (28)" layout) at half width, no class balancing and model
    selection by validation accuracy: the protocol's headline figure is plain accuracy."""
    return Config(
        preset="dermamnist",
        data=DataConfig(image_size=(28, 28), batch_size=64, folds=8, test_fraction=0.2,
                        split_by="image",
                        augment=dataclasses.replace(AugmentConfig.geometric(), shear=0.0)),
        model=ModelConfig(backbone="resnet18-small-half", weights=None, dropout=0.2,
                          clinical_units=(32,)),
        training=TrainingConfig(epochs=30, optimizer="adamw", learning_rate=2e-3,
                                weight_decay=0.05, warmup_epochs=1, freeze_epochs=0,
                                patience=0, monitor="val_accuracy"),
    )


def _photos() -> Config:
    """The second study's settings (its public training code): VGG16 at 250x250, ImageNet
    weights for the P variants, dropout 0.5, Adam 1e-4, batch 64, early stop at patience 25,
    zoom / flip / rotation / shift augmentation, a patient-grouped 80/10/10 split."""
    return Config(
        preset="photos",
        data=DataConfig(task="clinical-photos", image_size=(250, 250), batch_size=64,
                        test_fraction=0.1, augment=AugmentConfig.geometric()),
        model=ModelConfig(backbone="vgg16", variant="p", weights="imagenet", dropout=0.5),
        training=TrainingConfig(epochs=100, learning_rate=1e-4, warmup_epochs=0,
                                freeze_epochs=0, schedule="constant", patience=25,
                                monitor="val_loss"),
    )


def _photos_smoke() -> Config:
    """Clinical photos in seconds on a CPU: a small phantom, 64x64 photos, 2 epochs."""
    photos = _photos()
    return dataclasses.replace(
        photos, preset="photos-smoke",
        data=dataclasses.replace(photos.data, phantom_patients=40, image_size=(64, 64),
                                 batch_size=16),
        model=dataclasses.replace(photos.model, weights=None),
        training=dataclasses.replace(photos.training, epochs=2, patience=0))


PRESETS: dict[str, typing.Callable[[], Config]] = {
    "default": Config, "paper": _paper, "smoke": _smoke, "demo": _demo,
    "cpu-real": _cpu_real, "dermamnist": _dermamnist, "photos": _photos,
    "photos-smoke": _photos_smoke,
}


def make_config(preset: str = "default") -> Config:
    """A preset by name; an unknown name lists the valid ones."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[preset]()


# --- overrides ------------------------------------------------------------------------------


def apply_overrides(config, overrides: list[str]):
    """Apply ``section.field=value`` strings; unknown keys and wrong types raise ValueError."""
    for item in overrides:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"override {item!r}: expected section.field=value")
        config = _replace_path(config, key.strip().split("."), text.strip(), key.strip())
    return config


def _replace_path(node, path: list[str], text: str, key: str):
    fields = {item.name: item for item in dataclasses.fields(node)}
    name = path[0]
    if name not in fields:
        raise ValueError(f"unknown config key {key!r}: {type(node).__name__} has no field "
                         f"{name!r} (fields: {', '.join(fields)})")
    hint = typing.get_type_hints(type(node))[name]
    current = getattr(node, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown config key {key!r}: {name!r} has no sub-fields")
        return dataclasses.replace(node, **{name: _replace_path(current, path[1:], text, key)})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"config key {key!r} is a section; set one of its fields")
    return dataclasses.replace(node, **{name: parse_value(text, hint, key)})


def parse_value(text: str, hint, key: str = "value"):
    """Parse command-line ``text`` into the type ``hint`` (str, int, float, bool, tuples,
    optional values); ``224x300`` and ``224,300`` both parse as a tuple."""
    options = typing.get_args(hint) if _is_union(hint) else ()
    if options:
        if type(None) in options and text.lower() in ("none", "null", ""):
            return None
        hint = next(option for option in options if option is not type(None))
    try:
        return _parse_plain(text, hint)
    except (ValueError, TypeError) as error:
        raise ValueError(f"config key {key!r}: cannot read {text!r} as "
                         f"{_type_name(hint)} ({error})") from None


def _parse_plain(text: str, hint):
    origin = typing.get_origin(hint)
    if origin is tuple:
        arguments = typing.get_args(hint)
        text = text.strip("()[] ")
        if arguments[0] is not str:  # "224x300" is a size; "vidir_molemax" is a word
            text = text.replace("x", ",")
        parts = [part for part in text.split(",") if part]
        if arguments[-1] is not Ellipsis and len(parts) != len(arguments):
            raise ValueError(f"expected {len(arguments)} values")
        element = arguments[0]
        return tuple(_parse_plain(part.strip(), element) for part in parts)
    if hint is bool:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError("expected true or false")
        return lowered in ("true", "1", "yes")
    if hint is float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value
    if hint in (int, str):
        return hint(text)
    raise TypeError(f"unsupported field type {hint}")


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", str(hint))


# --- JSON -------------------------------------------------------------------------------------


def config_to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(payload: dict, cls=Config, where: str = "config"):
    """Rebuild a config from ``config_to_dict`` output, checking keys and types."""
    if not isinstance(payload, dict):
        raise ValueError(f"{where}: expected an object, got {type(payload).__name__}")
    hints = typing.get_type_hints(cls)
    unknown = set(payload) - set(hints)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    values = {name: value_from_json(value, hints[name], f"{where}.{name}")
              for name, value in payload.items()}
    return cls(**values)


def value_from_json(value, hint, where: str):
    """One JSON value -> a value of the field type ``hint`` (nested dataclasses, optionals,
    tuples, numbers); a mismatch is a ValueError naming ``where``. Other config trees
    (``gan.config``) build on it."""
    if dataclasses.is_dataclass(hint):
        return config_from_dict(value, hint, where)
    if _is_union(hint):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(option for option in typing.get_args(hint) if option is not type(None))
    if typing.get_origin(hint) is tuple:
        element = typing.get_args(hint)[0]
        return tuple(value_from_json(item, element, where) for item in _as_list(value, where))
    expected = (int, float) if hint is float else hint
    if not isinstance(value, expected) or (hint is not bool and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {_type_name(hint)}, got {value!r}")
    if hint is float and not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return hint(value)


def _as_list(value, where: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list, got {value!r}")
    return value


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")


def read_config_json(path: str | Path, version: int) -> dict:
    """A config file's JSON object, checked to carry ``version``; errors name the file.
    Shared with ``gan.config``."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read config ({error})") from None
    if not isinstance(payload, dict) or payload.get("version") != version:
        found = payload.get("version") if isinstance(payload, dict) else None
        raise ValueError(f"{path}: config version {found!r}, expected {version}")
    return payload


def load_config(path: str | Path) -> Config:
    """Read a ``config.json`` written by ``save_config``; errors name the file and the key."""
    payload = read_config_json(path, CONFIG_VERSION)
    return config_from_dict(payload, Config, where=str(path))
