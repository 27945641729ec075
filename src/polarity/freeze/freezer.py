"""``Freezer``: Freeze-SGD on any ``nn.Module`` and any ``torch.optim.Optimizer``.

After each optimizer step (a step post-hook), every constrained entry with ``W * T < 0`` is
reset by one of the methods of ``methods.py``; entries with ``T = 0``, parameters without a
template entry (biases, by default) and the optimizer's state are never touched.  ``impose``
makes a module comply once, by flipping by default (the magnitude control of SPEC §3).

Usage::

    template = Template.from_module(pretrained)          # or Template.random(model, seed=0)
    impose(model, template)                              # comply, keeping the |w| multiset
    freezer = Freezer(model, template, reset="posRand")
    handle = freezer.attach(optimizer)                   # reset after every optimizer.step()
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn

from .. import _numba
from ..seeds import parameter_step_seed
from ..template import Template, TemplateError, iter_pairs
from .methods import DEFAULT_EPS, ResetError, check_eps, check_method
from .numba_reset import reset_numpy
from .torch_reset import reset_torch_

_NUMBA_DTYPES = (torch.float32, torch.float64)


def reset_(w: torch.Tensor, t: torch.Tensor, method: str = "posRand", eps: float = DEFAULT_EPS,
           generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
    """Reset, in place, the entries of ``w`` that violate the sign tensor ``t`` (broadcastable to
    ``w``; int8 or floating).  Returns the number of entries reset as a 0-d tensor (no host sync
    on an accelerator).  posRand draws from the counter-based stream of ``seed`` (drawn from
    ``generator``, or torch's global generator, when not given), so the same seed gives the same
    values on every device.  Contiguous float32/float64 CPU tensors take the fused numba loop,
    split over ``torch.get_num_threads()`` threads; the values do not depend on the split."""
    code = check_method(method)
    eps = check_eps(eps)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    seed = int(seed) & 0xFFFFFFFF
    with torch.no_grad():
        if (_numba.AVAILABLE and w.device.type == "cpu" and w.dtype in _NUMBA_DTYPES
                and w.is_contiguous() and t.shape == w.shape):
            tt = t if (t.dtype == torch.int8 and t.is_contiguous()) else t.to(torch.int8).contiguous()
            k = reset_numpy(w.view(-1).numpy(), tt.view(-1).numpy(), code, eps, seed,
                            threads=torch.get_num_threads())
            return torch.tensor(k)
        return reset_torch_(w, t, method, eps, seed)


class Freezer:
    """Enforce ``template`` on ``module``'s parameters after every optimizer step.

    ``reset`` is one of :data:`RESET_METHODS`; ``seed`` fixes the posRand draws (``None`` takes a
    seed from torch's global generator, so ``torch.manual_seed`` makes runs reproducible).  The
    draws of parameter i at step s come from ``parameter_step_seed(seed, s, i)``, the same on
    every device.  The freezer keeps its own stream: attaching it does not change the model's
    data order or dropout draws.
    """

    def __init__(self, module: nn.Module, template: Template, reset: str = "posRand",
                 eps: float = DEFAULT_EPS, seed: int | None = None):
        if not isinstance(template, Template):
            raise TypeError(f"template must be a polarity.Template, got {type(template).__name__}")
        check_method(reset)
        self.module = module
        self.template = template
        self.reset = reset
        self.eps = check_eps(eps)
        self.seed = int(torch.randint(0, 2**62, (1,))) if seed is None else int(seed)
        self.steps = 0
        self.last_reset: torch.Tensor | None = None  # entries reset by the latest project()
        self._pairs = [(name, p, t) for name, p, t in iter_pairs(template, module)]
        for name, p, _ in self._pairs:
            if p.device.type == "meta":
                raise TemplateError(f"parameter {name!r} is on the meta device (no data to "
                                    "constrain); materialise the model (e.g. to_empty + init) first")
            try:
                check_eps(self.eps, p.dtype)
            except ResetError as e:
                raise ResetError(f"parameter {name!r}: {e}") from None
        self._dev: dict[str, torch.Tensor] = {}
        self._hooks: dict[int, torch.utils.hooks.RemovableHandle] = {}

    def _sign(self, name: str, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cached = self._dev.get(name)
        if cached is None or cached.device != p.device:
            cached = t.to(p.device)
            self._dev[name] = cached
        return cached

    @torch.no_grad()
    def project(self, sync: bool = False) -> torch.Tensor | int:
        """Apply the reset now.  Returns the number of entries reset: a 0-d tensor on the
        parameters' device (no host sync), or an ``int`` when ``sync=True``."""
        self.steps += 1
        total = None
        for i, (name, p, t) in enumerate(self._pairs):
            w = p.data
            k = reset_(w, self._sign(name, w, t), self.reset, self.eps,
                       seed=parameter_step_seed(self.seed, self.steps, i))
            k = k.to(w.device, non_blocking=True)
            total = k if total is None else total + k
        if total is None:
            total = torch.zeros((), dtype=torch.int64)
        self.last_reset = total
        return int(total) if sync else total

    __call__ = project

    def attach(self, optimizer: torch.optim.Optimizer):
        """Run :meth:`project` after every ``optimizer.step()``.  Returns a handle with
        ``.remove()``.  Attaching to an optimizer this freezer is already attached to warns and
        returns the existing handle (a second hook would reset twice per step)."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"attach() needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        old = self._hooks.get(id(optimizer))
        if old is not None and old.id in optimizer._optimizer_step_post_hooks:
            warnings.warn("this Freezer is already attached to this optimizer; returning the "
                          "existing handle", stacklevel=2)
            return old
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        absent = [name for name, p, _ in self._pairs if id(p) not in held]
        if absent:
            warnings.warn(f"constrained parameters not optimised by this optimizer: {absent[:5]}",
                          stacklevel=2)
        handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: self.project())
        self._hooks[id(optimizer)] = handle
        return handle

    def violations(self) -> int:
        return sum(self.template.violations(self.module).values())

    def state_dict(self) -> dict:
        """Everything that determines the next resets (the template travels separately)."""
        return {"seed": self.seed, "steps": self.steps, "reset": self.reset, "eps": self.eps}

    def load_state_dict(self, state: Mapping) -> None:
        missing = {"seed", "steps", "reset", "eps"} - set(state)
        if missing:
            raise KeyError(f"Freezer state lacks {sorted(missing)}")
        check_method(state["reset"])
        self.eps = check_eps(state["eps"])
        self.reset = state["reset"]
        self.seed, self.steps = int(state["seed"]), int(state["steps"])


@torch.no_grad()
def impose(module: nn.Module, template: Template, method: str = "flip") -> int:
    """Make ``module`` comply with ``template`` in place and return the number of entries
    changed.  ``flip`` (the default) keeps the multiset of |w| exactly: it is the magnitude
    control of SPEC §3.  The other reset methods are accepted but change magnitudes."""
    check_method(method)
    total = 0
    for _, p, t in iter_pairs(template, module):
        total += int(reset_(p.data, t.to(p.device), method))
    return total


__all__ = ["Freezer", "impose", "reset_"]
