"""Attach one Freezer to every optimizer of a trainer (shared by the callbacks)."""
from __future__ import annotations

import warnings

import torch

from ..freeze import Freezer


def innermost(optimizer):
    """The torch optimizer inside a trainer's wrapper (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``): its ``step()`` is the one that runs step hooks."""
    while True:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            return optimizer
        optimizer = inner


def attach_all(freezer: Freezer, optimizers) -> list:
    """Attach ``freezer`` to each optimizer; warn once if no optimizer holds some constrained
    parameter (each one alone may hold only some, as with a GAN's two)."""
    optimizers = [innermost(o) for o in optimizers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="constrained parameters not optimised")
        handles = [freezer.attach(o) for o in optimizers]
    held = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
    absent = [name for name, p in freezer.named_parameters() if id(p) not in held]
    if absent:
        warnings.warn(f"constrained parameters that no optimizer updates: {absent[:5]}",
                      stacklevel=3)
    return handles
