"""Models: the XOR MLP and AlexNet variants, and a small registry for the image experiments.

``build_model(arch, num_classes, **kw)``: ``"alexnet"`` (torchvision's layout, ImageNet weights
load; ``head="append"`` or ``"replace"``, see :mod:`polarity.models.alexnet`) or ``"compact"``
(AlexNet-style network for 32x32 inputs; ``in_size``, ``width``).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .alexnet import alexnet, compact_alexnet, head_names, imagenet_state_dict, init_glorot_

MODELS: dict[str, Callable[..., nn.Module]] = {"alexnet": alexnet, "compact": compact_alexnet}


def build_model(arch: str, num_classes: int = 10, **kw) -> nn.Module:
    """Build a registered image model by name; unknown names or options raise ValueError."""
    try:
        fn = MODELS[arch]
    except KeyError:
        raise ValueError(f"unknown model {arch!r}; choose one of {sorted(MODELS)}") from None
    try:
        return fn(num_classes=num_classes, **kw)
    except TypeError as e:
        raise ValueError(f"bad options for model {arch!r}: {e}") from e


__all__ = ["MODELS", "build_model", "alexnet", "compact_alexnet", "head_names", "imagenet_state_dict",
           "init_glorot_"]
