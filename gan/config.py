"""The GAN run's configuration: a frozen dataclass tree, named presets, overrides, JSON.

    GanConfig
      data:     GanDataConfig      which images, how they are squared and cached
      network:  NetworkConfig      the generator's and discriminator's shape (built in
                                   gan.networks)
      schedule: GrowthSchedule     resolutions, images per phase, batch sizes, learning rate
      training: GanTrainingConfig  WGAN-GP / InfoGAN weights, Adam, EMA, seeds, checkpoints

Every run writes its config as ``config.json``; ``load_gan_config`` reads it back. Overrides
use ``dermnet.config``'s ``section.field=value`` syntax and checks; this module adds the one
type the classifier's config lacks, the schedule's ``batch_sizes`` dict
(``--set schedule.batch_sizes=4:16,8:16``). ``network.final_resolution`` and
``schedule.final_resolution`` must agree, and ``data.clinical`` goes with
``network.clinical_codes = CLINICAL_CODES`` (0 without it); ``check_gan_config`` says so once
all overrides are in (``--resolution`` and ``--clinical`` on the command line set both).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from dermnet import config as base
from gan.clinical import CLINICAL_CODES
from gan.schedule import GrowthSchedule, karras_schedule, paper_schedule, smoke_schedule

START_RESOLUTION = 4  # the first block's side; every network starts from 4x4
CODE_SPLITS = ("blocks", "input")


@dataclass(frozen=True)
class NetworkConfig:
    final_resolution: int = 512       # side of the last block's images (paper: 512, 8 blocks)
    latent_size: int = 128            # noise dimensions (the incompressible part of z)
    num_classes: int = 7              # categorical code: one-hot over the 7 lesion types
    continuous_codes: int = 4         # continuous codes, U(-1, 1), split over the blocks
    clinical_codes: int = 0           # 0: none; else the size of the caller's clinical vector
    fmap_base: int = 8192             # feature maps: min(2 * fmap_base / R, fmap_max)
    fmap_max: int = 512               # (Karras: 8192 and 512, i.e. 512 up to 32x32, 32 at 512)
    code_split: str = "blocks"        # how codes enter the generator: "blocks" or "input"
    use_minibatch_stddev: bool = True  # the critic sees each group's variety (Karras, sec. 3)
    mbstd_group_size: int = 4         # samples per minibatch-stddev group (Karras: 4)
    q_units: int = 128                # the Q head's hidden layer (Chen et al. 2016: 128)

    def __post_init__(self):
        check_network_config(self)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Every block's resolution, 4 first."""
        steps = int(math.log2(self.final_resolution // START_RESOLUTION))
        return tuple(START_RESOLUTION * 2**step for step in range(steps + 1))

    def filters_at(self, resolution: int) -> int:
        """Feature maps of the block at ``resolution``.

        Karras's ``nf(log2(R) - 1)`` = min(fmap_base / (R / 2), fmap_max): with the defaults
        this is the 512, ..., 512, 256, 128, 64, 32 of their table 2, not fmap_base / R,
        which would halve every width from 64x64 on.
        """
        return max(1, min(2 * self.fmap_base // resolution, self.fmap_max))


def check_network_config(config: NetworkConfig) -> None:
    """Raise ValueError naming the first thing wrong with ``config``."""
    final = config.final_resolution
    if not isinstance(final, int) or final < START_RESOLUTION or final & (final - 1):
        raise ValueError(f"NetworkConfig.final_resolution must be a power of two >= 4, "
                         f"got {final}")
    for name in ("latent_size", "num_classes", "continuous_codes", "fmap_base", "fmap_max",
                 "mbstd_group_size", "q_units"):
        if getattr(config, name) < 1:
            raise ValueError(f"NetworkConfig.{name} must be positive, got "
                             f"{getattr(config, name)}")
    if config.clinical_codes < 0:
        raise ValueError(f"NetworkConfig.clinical_codes must be >= 0, "
                         f"got {config.clinical_codes}")
    if config.code_split not in CODE_SPLITS:
        raise ValueError(f"NetworkConfig.code_split must be one of {CODE_SPLITS}, "
                         f"got {config.code_split!r}")

CONFIG_VERSION = 1
STRATEGIES = ("auto", "mirrored", "one_device", "default")  # single-machine strategies


@dataclass(frozen=True)
class GanDataConfig:
    data_dir: str = ""                   # HAM10000 folder; "" = the phantom dataset
    phantom_images: int = 1000           # size of the phantom dataset generated when data_dir=""
    square: str = "crop"                 # 600x450 -> square: "crop" the centre or "pad" it
    # Decoded uint8 images at the final resolution: "memory" decodes at every start; a folder
    # keeps a .npy there, memory-mapped by later runs (10,015 images at 512 are 7.9 GB).
    cache: str = "memory"
    flips: bool = True                   # random horizontal and vertical flips (no "up" in skin)
    # Condition on age, sex and site (gan.clinical): network.clinical_codes must then be
    # CLINICAL_CODES (--clinical sets both).
    clinical: bool = False

    def __post_init__(self):
        base.check_choices(self, {"square": ("crop", "pad")})
        if self.phantom_images < 7:
            raise ValueError("GanDataConfig.phantom_images must be >= 7 (one per class)")


@dataclass(frozen=True)
class GanTrainingConfig:
    critic_steps: int = 1                # n_critic: critic updates per generator update
    gp_weight: float = 10.0              # WGAN-GP lambda (Gulrajani et al. 2017)
    drift: float = 0.001                 # drift penalty epsilon (Karras et al. 2018)
    info_weight: float = 1.0             # InfoGAN lambda on the mutual-information loss
    # Q's class loss on the real images' labels (semi-supervised InfoGAN): ties class code k
    # to lesion class k, so the paper's test (classify generated images) is meaningful;
    # 0 gives the unsupervised InfoGAN, whose categories need not be the lesion classes.
    label_weight: float = 1.0
    # Factor on the continuous codes' Gaussian NLL within the InfoGAN loss (Chen et al. use a
    # smaller lambda for continuous codes): as Q grows confident its gradient scales with
    # 1 / sigma^2 and, at full weight, outweighed the critic's (the Wasserstein distance
    # ran away at 8x8 on the phantom dataset).
    continuous_weight: float = 0.1
    ema: float = 0.999                   # generator weight averaging decay (Karras: 0.999)
    beta_1: float = 0.0                  # Adam, as Karras et al.: no momentum
    beta_2: float = 0.99
    epsilon: float = 1e-8
    seed: int = 0                        # weights, data order, flips, codes: all derive from it
    strategy: str = "auto"               # auto | mirrored | one_device | default
    deterministic: bool = False          # TF op determinism, no Grappler (bit-exact resumes)
    checkpoint_every_images: int = 50_000  # resume state; also written at every stage end
    report_every_images: int = 10_000    # progress line and TensorBoard scalars
    grid_columns: int = 8                # samples per class row in each stage's image grid

    def __post_init__(self):
        base.check_choices(self, {"strategy": STRATEGIES})
        if self.critic_steps < 1 or not 0.0 <= self.ema < 1.0:
            raise ValueError("GanTrainingConfig: critic_steps must be >= 1, ema in [0, 1)")
        if min(self.checkpoint_every_images, self.report_every_images, self.grid_columns) < 1:
            raise ValueError("GanTrainingConfig: checkpoint/report intervals and "
                             "grid_columns must be positive")


@dataclass(frozen=True)
class GanConfig:
    preset: str = "paper"                # the preset this config started from
    data: GanDataConfig = field(default_factory=GanDataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    schedule: GrowthSchedule = field(default_factory=paper_schedule)
    training: GanTrainingConfig = field(default_factory=GanTrainingConfig)
    version: int = CONFIG_VERSION        # config layout version, checked on load


def check_gan_config(config: GanConfig) -> GanConfig:
    """Cross-section rules that single overrides may break for a moment; returns config."""
    network, schedule = config.network, config.schedule
    if network.final_resolution != schedule.final_resolution:
        raise ValueError(f"network.final_resolution ({network.final_resolution}) and "
                         f"schedule.final_resolution ({schedule.final_resolution}) differ; "
                         "set both (--resolution R does)")
    _check_clinical(config)
    return config


def _check_clinical(config: GanConfig) -> None:
    codes = config.network.clinical_codes
    if config.data.clinical and codes != CLINICAL_CODES:
        raise ValueError(f"data.clinical is on, so network.clinical_codes must be "
                         f"{CLINICAL_CODES} (age, age missing, sex and site one-hots), got "
                         f"{codes}; --clinical sets both")
    if not config.data.clinical and codes:
        raise ValueError(f"network.clinical_codes is {codes} but data.clinical is off: set "
                         "data.clinical=true (clinical codes come from the real rows) or "
                         "network.clinical_codes=0; --clinical sets both")


def _paper() -> GanConfig:
    """Study 1, section 2.4: 4x4 -> 512x512 in 8 blocks, batch 128 -> 2, Adam lr 0.0075
    decaying by 0.99, WGAN-GP. Point --data-dir at the real HAM10000 images."""
    return GanConfig(preset="paper", data=GanDataConfig(phantom_images=10015))


def _karras() -> GanConfig:
    """Karras et al.'s 512x512 settings (lr 0.001, constant; their batch sizes)."""
    return GanConfig(preset="karras", data=GanDataConfig(phantom_images=10015),
                     schedule=karras_schedule())


def _phantom() -> GanConfig:
    """The CPU demonstration: 4x4 -> 32x32 on a 1,000-image phantom in about 13 minutes.
    Narrow networks (32 feature maps, 16 at 32x32): on a CPU the cost is the convolutions,
    and the gradient penalty's double back-propagation triples them. Batch 16 throughout:
    a GAN needs steps more than images (25,000 images per phase are 1,563 steps; with
    10,000 per phase and batch 32 even the 4x4 images stayed per-pixel noise). EMA 0.99:
    Karras's 0.999 averages over ~1,000 steps, most of a phase here."""
    schedule = dataclasses.replace(
        smoke_schedule(32), images_per_phase=25_000,
        batch_sizes={4: 16, 8: 16, 16: 16, 32: 16}, learning_rate=0.001, lr_decay=1.0)
    network = NetworkConfig(final_resolution=32, latent_size=64, continuous_codes=2,
                            fmap_base=256, fmap_max=32, q_units=64)
    return GanConfig(preset="phantom", data=GanDataConfig(phantom_images=1000),
                     network=network, schedule=schedule,
                     training=GanTrainingConfig(ema=0.99, checkpoint_every_images=10_000,
                                                report_every_images=5_000))


def _smoke() -> GanConfig:
    """Seconds on a CPU: 4x4 -> 8x8, 16 images per phase, tiny networks (tests)."""
    schedule = dataclasses.replace(smoke_schedule(8), images_per_phase=16,
                                   batch_sizes={4: 8, 8: 8})
    network = NetworkConfig(final_resolution=8, latent_size=8, continuous_codes=2,
                            fmap_base=32, fmap_max=8, q_units=8)
    return GanConfig(preset="smoke", data=GanDataConfig(phantom_images=40),
                     network=network, schedule=schedule,
                     training=GanTrainingConfig(checkpoint_every_images=16,
                                                report_every_images=8, grid_columns=4))


PRESETS: dict[str, typing.Callable[[], GanConfig]] = {
    "paper": _paper, "karras": _karras, "phantom": _phantom, "smoke": _smoke,
}


def make_gan_config(preset: str = "paper") -> GanConfig:
    """A preset by name; an unknown name lists the valid ones."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[preset]()


# --- overrides: dermnet.config's, plus dict fields --------------------------------------------


def apply_overrides(config: GanConfig, overrides: list[str]) -> GanConfig:
    """``section.field=value`` strings, as ``dermnet.config.apply_overrides``; a dict field
    takes ``key:value,key:value`` (it replaces the whole dict)."""
    for item in overrides:
        key, _, text = item.partition("=")
        path = key.strip().split(".")
        if _field_hint(config, path) is dict:
            config = _replace_dict(config, path, text.strip(), key.strip())
        else:
            config = base.apply_overrides(config, [item])
    return config


def _field_hint(node, path: list[str]):
    """The origin type of the field at ``path`` (dict, tuple, ...), or None if unknown."""
    for depth, name in enumerate(path):
        if not dataclasses.is_dataclass(node) or name not in _names(node):
            return None
        hint = typing.get_type_hints(type(node))[name]
        if depth == len(path) - 1:
            return typing.get_origin(hint) or hint
        node = getattr(node, name)
    return None


def _names(node) -> set[str]:
    return {item.name for item in dataclasses.fields(node)}


def _replace_dict(node, path: list[str], text: str, key: str):
    if len(path) > 1:
        child = _replace_dict(getattr(node, path[0]), path[1:], text, key)
        return dataclasses.replace(node, **{path[0]: child})
    key_type, value_type = typing.get_args(typing.get_type_hints(type(node))[path[0]])
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        value = {key_type(name.strip()): value_type(number.strip()) for name, number in pairs}
    except ValueError:
        raise ValueError(f"config key {key!r}: cannot read {text!r} as key:value,"
                         "key:value") from None
    return dataclasses.replace(node, **{path[0]: value})


# --- JSON -------------------------------------------------------------------------------------


def gan_config_from_dict(payload: dict, cls=GanConfig, where: str = "config"):
    """Rebuild a config from ``dataclasses.asdict`` output, checking keys and types (JSON's
    string keys of dict fields are turned back into their key type)."""
    if not isinstance(payload, dict):
        raise ValueError(f"{where}: expected an object, got {type(payload).__name__}")
    hints = typing.get_type_hints(cls)
    unknown = set(payload) - set(hints)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return cls(**{name: _from_json(value, hints[name], f"{where}.{name}")
                  for name, value in payload.items()})


def _from_json(value, hint, where: str):
    if dataclasses.is_dataclass(hint):
        return gan_config_from_dict(value, hint, where)
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {value!r}")
        key_type, value_type = typing.get_args(hint)
        return {key_type(name): base.value_from_json(item, value_type, f"{where}.{name}")
                for name, item in value.items()}
    return base.value_from_json(value, hint, where)


def save_gan_config(config: GanConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def load_gan_config(path: str | Path) -> GanConfig:
    """Read a ``config.json`` written by ``save_gan_config``; errors name the file and key."""
    payload = base.read_config_json(path, CONFIG_VERSION)
    return gan_config_from_dict(payload, GanConfig, where=str(path))
