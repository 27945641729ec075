"""What the trainer callbacks share: their settings, and the one start / log / stop sequence
around a Freezer (impose, build or continue the freezer, attach it to every optimizer; the resets
since the previous log; detach).  Each trainer's callback only maps its hooks onto these."""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from ..freeze import DEFAULT_EPS, Freezer, check_eps, check_method, impose as impose_, innermost
from ..template import Template


class Logged(NamedTuple):
    """The freezer's step count and total resets when the callback last logged."""

    steps: int
    resets: torch.Tensor | int


class CallbackBase:
    """The template and the Freezer's settings of a trainer callback (validated when it is made),
    and the freezer's life across fits: ``_start`` at the start of each fit, ``_resets_since_log``
    when the trainer logs, ``_stop`` at its end; state restored from a checkpoint is held until
    the freezer exists."""

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
        self._logged = Logged(0, 0)
        self._state: dict | None = None  # restored from a checkpoint before the freezer exists

    def _template_key(self) -> str:
        """A short digest of the template's entry names: it tells apart callbacks that constrain
        different parts of one model, and stays the same across a save and a resume."""
        names = "\n".join(sorted(self.template.keys())).encode()
        return hashlib.sha256(names).hexdigest()[:12]

    def _start(self, module: nn.Module, optimizers) -> None:
        """Make ``module`` comply, then run the freezer on it after every step of ``optimizers``.
        A later fit with the same callback continues the freezer's posRand stream where the
        previous one ended, unless a checkpoint's state was restored (which wins)."""
        self._stop()  # a fit that ended without its end hook (e.g. Lightning's tuner)
        if self.impose is not None:
            impose_(module, self.template, self.impose)
        previous = self.freezer
        if previous is None or previous.module is not module:
            seed = self.seed if previous is None else previous.seed
            self.freezer = Freezer(module, self.template, self.reset, self.eps, seed)
            if previous is not None and self._state is None:
                self._state = previous.state_dict()
        if self._state is not None:
            self.freezer.load_state_dict(self._state)
            self._state = None
        self._logged = Logged(self.freezer.steps, self.freezer.total_reset)
        self._handles = attach_all(self.freezer, optimizers)

    def _resets_since_log(self) -> torch.Tensor | None:
        """The entries reset since the previous call, or None when no optimizer step ran since
        (gradient accumulation)."""
        f = self.freezer
        if f is None or f.steps == self._logged.steps:
            return None
        resets = f.total_reset - self._logged.resets
        self._logged = Logged(f.steps, f.total_reset)
        return resets

    def _stop(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _freezer_state(self) -> dict:
        """The freezer's state for a checkpoint (the pending restored one before it exists)."""
        return self.freezer.state_dict() if self.freezer is not None else dict(self._state or {})

    def _load_freezer_state(self, state: Mapping) -> None:
        if not state:
            return
        if self.freezer is None:
            self._state = dict(state)
            return
        self.freezer.load_state_dict(state)
        self._logged = Logged(self.freezer.steps, self.freezer.total_reset)


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
