"""What the trainer callbacks share: their settings, and attaching one Freezer to every optimizer."""
from __future__ import annotations

import warnings

import torch

from ..freeze import DEFAULT_EPS, Freezer, check_eps, check_method, innermost
from ..template import Template


class CallbackSettings:
    """The template and the Freezer's settings of a trainer callback, validated when it is made."""

    def __init__(self, template: Template, reset: str = "posRand", eps: float = DEFAULT_EPS,
                 seed: int | None = None, impose: str | None = "flip",
                 log_name: str = "polarity/resets"):
        if not isinstance(template, Template):
            raise TypeError(f"template must be a polarity.Template, got {type(template).__name__}")
        check_method(reset)
        if impose is not None:
            check_method(impose)
        self.template, self.reset, self.eps, self.seed = template, reset, check_eps(eps), seed
        self.impose, self.log_name = impose, log_name
        self.freezer: Freezer | None = None
        self._handles: list = []
        self._seen: tuple = (0, 0)  # the freezer's steps and total_reset at the latest log


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
