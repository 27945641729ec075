"""Models: the XOR MLP and AlexNet variants, and a small registry for the image experiments.

``build_model(arch, num_classes, **kw)``: ``"alexnet"`` (torchvision's layout, ImageNet weights
load; ``head="append"`` or ``"replace"``, see :mod:`polarity.models.alexnet`), ``"compact"``
(AlexNet-style network for 32x32 inputs; ``in_size``, ``width``) or your own network as
``"package.module:factory"`` (a callable ``num_classes -> nn.Module``; ``in_size``: the input side
its output is checked at; :mod:`polarity.models.factory`).  ``initialised`` adds the
initialisation a seed draws.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..cli_errors import unknown
from .alexnet import alexnet, compact_alexnet, head_names, imagenet_state_dict, init_glorot_
from .factory import ModelError, build_factory, is_factory, load_factory

MODELS: dict[str, Callable[..., nn.Module]] = {"alexnet": alexnet, "compact": compact_alexnet}


def build_model(arch: str, num_classes: int = 10, **kw) -> nn.Module:
    """Build a registered image model by name, or a factory's (``package.module:factory``);
    unknown names or options raise ValueError (a factory's problems: :class:`ModelError`)."""
    if is_factory(arch):
        extra = sorted(set(kw) - {"in_size"})
        if extra:
            raise ValueError(f"bad options for model {arch!r}: a factory takes only in_size, got {extra}")
        return build_factory(arch, num_classes, kw.get("in_size"))
    try:
        fn = MODELS[arch]
    except KeyError:
        raise ValueError(unknown("model", arch, [*sorted(MODELS), "package.module:factory"])) from None
    try:
        return fn(num_classes=num_classes, **kw)
    except TypeError as e:
        raise ValueError(f"bad options for model {arch!r}: {e}") from e


def initialised(arch: str, num_classes: int, seed: int, **kw) -> nn.Module:
    """``build_model(arch, num_classes, **kw)`` with the initialisation ``seed`` draws: the
    reference's :func:`init_glorot_` for a registered network; a factory's own initialisation,
    drawn with torch's generator seeded by ``seed`` (docs/models.md)."""
    if not is_factory(arch):
        return init_glorot_(build_model(arch, num_classes, **kw), seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_model(arch, num_classes, **kw)


__all__ = ["MODELS", "build_model", "initialised", "alexnet", "compact_alexnet", "head_names",
           "imagenet_state_dict", "init_glorot_", "ModelError", "is_factory", "load_factory",
           "build_factory"]
