"""The backbone registry: a backbone is a name, looked up in a table, never an ``if/elif``.

Each entry (``BackboneSpec``) knows how to build its headless network for an input shape,
its pixel preprocessing, its pooled feature width, the weights it can load and its reference
parameter count. The built-in entries are registered in ``dermnet.models.backbones``, which
also looks names up (``get_backbone``, ``list_backbones``); a user's own backbone is one
``register_backbone`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class BackboneSpec:
    name: str                      # registry key, e.g. "resnet50"
    build: Callable[..., keras.Model]  # (input_shape, weights=None, include_top=False) -> model;
    #                                    headless (no pooling) unless include_top
    preprocessing: str             # PixelPreprocessing mode: caffe | torch | tf | none
    feature_width: int             # channels of the last feature map = pooled feature width
    weights: tuple[str, ...]       # named weights it can load besides None and a file path
    reference_parameters: int      # parameter count with the 1000-class ImageNet top
    source: str                    # where the architecture comes from, for docs and reports
    min_size: int = 32             # smallest input side the architecture accepts
    reference_counts_statistics: bool = True  # reference count includes BN moving mean/var
    #                                           (Keras convention) or not (PyTorch convention)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry; a name can be registered once."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def registered_backbones() -> dict[str, BackboneSpec]:
    """Every registered backbone by name, in registration order (a copy)."""
    return dict(_REGISTRY)
