"""Freeze-SGD: keep every constrained weight on its template's side of zero (SPEC §3).

After each optimizer step, every entry with ``W * T < 0`` is reset by one of four methods
(ε = 1e-3 by default):

* ``posCon``:  W = T·ε
* ``posRand``: W = T·U, U uniform on (0, ε]   (the paper's choice)
* ``zero``:    W = 0
* ``flip``:    W = −W

Entries with ``T = 0`` and parameters without a template entry (biases, by default) are never
touched, nor is the optimizer's state.  Exact zeros do not violate the template.

Usage::

    template = Template.from_module(pretrained)          # or Template.random(model, seed=0)
    impose(model, template)                              # comply, keeping the |w| multiset
    freezer = Freezer(model, template, reset="posRand")
    handle = freezer.attach(optimizer)                   # reset after every optimizer.step()
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
import torch
from torch import nn

from . import _kernels
from .template import Patterns, Template, TemplateError, _named_tensors, iter_pairs, select_names

RESET_METHODS = ("posCon", "posRand", "zero", "flip")
_CODES = {"posCon": _kernels.POSCON, "posRand": _kernels.POSRAND, "zero": _kernels.ZERO,
          "flip": _kernels.FLIP}
_NUMBA_DTYPES = (torch.float32, torch.float64)


def _check_method(method: str) -> int:
    if method not in _CODES:
        raise ValueError(f"unknown reset method {method!r}; choose one of {', '.join(RESET_METHODS)}")
    return _CODES[method]


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not (eps > 0 and eps < float("inf")):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return eps


def _mix(*parts: int) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _reset_torch(w: torch.Tensor, t: torch.Tensor, method: str, eps: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Dense torch reset: any device, dtype and layout; no host sync."""
    tf = t.to(w.dtype)
    viol = (w * tf) < 0
    if method == "posCon":
        new = tf * eps
    elif method == "posRand":
        u = torch.rand(w.shape, generator=generator, device=w.device, dtype=torch.float32)
        new = (tf.float() * (eps * (1.0 - u))).to(w.dtype)
        tiny = torch.finfo(w.dtype).tiny
        new = torch.where(new.abs() < tiny, tf * tiny, new)  # stay strictly inside (0, eps]
    elif method == "zero":
        new = torch.zeros((), dtype=w.dtype, device=w.device)
    else:
        new = -w
    w.copy_(torch.where(viol, new, w))
    return viol.sum()


def reset_(w: torch.Tensor, t: torch.Tensor, method: str = "posRand", eps: float = 1e-3,
           generator: torch.Generator | None = None, seed: int | None = None) -> torch.Tensor:
    """Reset, in place, the entries of ``w`` that violate the sign tensor ``t`` (broadcastable to
    ``w``; int8 or floating).  Returns the number of entries reset as a 0-d tensor on ``w``'s
    device (no host sync).  posRand draws from ``generator`` (or, on the fused CPU path, from a
    counter-based stream keyed by ``seed``, itself drawn from ``generator`` when not given).
    The fused CPU path splits large parameters over as many threads as
    ``torch.get_num_threads()``; its result does not depend on the number of threads."""
    code = _check_method(method)
    eps = _check_eps(eps)
    with torch.no_grad():
        if (_kernels.AVAILABLE and w.device.type == "cpu" and w.dtype in _NUMBA_DTYPES
                and w.is_contiguous() and t.shape == w.shape):
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            tt = t if (t.dtype == torch.int8 and t.is_contiguous()) else t.to(torch.int8).contiguous()
            k = _kernels.reset_numpy(w.view(-1).numpy(), tt.view(-1).numpy(), code, eps, seed,
                                    threads=torch.get_num_threads())
            return torch.tensor(k)
        return _reset_torch(w, t, method, eps, generator)


class Freezer:
    """Enforce ``template`` on ``module``'s parameters after every optimizer step.

    ``reset`` is one of :data:`RESET_METHODS`; ``seed`` fixes the posRand draws (``None`` takes a
    seed from torch's global generator, so ``torch.manual_seed`` makes runs reproducible).  The
    freezer keeps its own random stream: attaching it does not change the model's data order or
    dropout draws.
    """

    def __init__(self, module: nn.Module, template: Template, reset: str = "posRand",
                 eps: float = 1e-3, seed: int | None = None):
        if not isinstance(template, Template):
            raise TypeError(f"template must be a polarity.Template, got {type(template).__name__}")
        _check_method(reset)
        self.module = module
        self.template = template
        self.reset = reset
        self.eps = _check_eps(eps)
        self.seed = int(torch.randint(0, 2**62, (1,))) if seed is None else int(seed)
        self.steps = 0
        self.last_reset: torch.Tensor | None = None  # entries reset by the latest project()
        self._pairs = [(name, p, t) for name, p, t in iter_pairs(template, module)]
        self._dev: dict[str, torch.Tensor] = {}
        self._gens: dict[torch.device, torch.Generator] = {}

    def _sign(self, name: str, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cached = self._dev.get(name)
        if cached is None or cached.device != p.device:
            cached = t.to(p.device)
            self._dev[name] = cached
        return cached

    def _generator(self, device: torch.device) -> torch.Generator:
        g = self._gens.get(device)
        if g is None:
            g = torch.Generator(device=device).manual_seed(self.seed)
            self._gens[device] = g
        return g

    @torch.no_grad()
    def project(self, sync: bool = False) -> torch.Tensor | int:
        """Apply the reset now.  Returns the number of entries reset: a 0-d tensor on the
        parameters' device (no host sync), or an ``int`` when ``sync=True``."""
        self.steps += 1
        total = None
        for i, (name, p, t) in enumerate(self._pairs):
            w = p.data
            tt = self._sign(name, w, t)
            k = reset_(w, tt, self.reset, self.eps, generator=self._generator(w.device),
                       seed=_mix(self.seed, self.steps, i))
            k = k.to(w.device, non_blocking=True)
            total = k if total is None else total + k
        if total is None:
            total = torch.zeros((), dtype=torch.int64)
        self.last_reset = total
        return int(total) if sync else total

    __call__ = project

    def attach(self, optimizer: torch.optim.Optimizer):
        """Run :meth:`project` after every ``optimizer.step()``.  Returns a handle with
        ``.remove()``."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"attach() needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        absent = [name for name, p, _ in self._pairs if id(p) not in held]
        if absent:
            warnings.warn(f"constrained parameters not optimised by this optimizer: {absent[:5]}",
                          stacklevel=2)
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self.project())

    def violations(self) -> int:
        return sum(self.template.violations(self.module).values())

    def state_dict(self) -> dict:
        return {"seed": self.seed, "steps": self.steps, "reset": self.reset, "eps": self.eps}

    def load_state_dict(self, state: Mapping) -> None:
        self.seed, self.steps = int(state["seed"]), int(state["steps"])
        self._gens.clear()


@torch.no_grad()
def impose(module: nn.Module, template: Template, method: str = "flip") -> int:
    """Make ``module`` comply with ``template`` in place and return the number of entries
    changed.  ``flip`` (the default) keeps the multiset of |w| exactly: it is the magnitude
    control of SPEC §3.  The other reset methods are accepted but change magnitudes."""
    _check_method(method)
    total = 0
    for _, p, t in iter_pairs(template, module):
        total += int(reset_(p.data, t.to(p.device), method))
    return total


def switch_fraction(
    before: nn.Module | Mapping[str, torch.Tensor],
    after: nn.Module | Mapping[str, torch.Tensor],
    include: Patterns = None,
    exclude: Patterns = None,
    biases: bool = False,
) -> dict[str, float]:
    """Per parameter, the fraction of entries whose sign differs between two state dicts (or
    modules).  The selection rule is the template's: weights with dim >= 2 by default."""
    a, b = _named_tensors(before), _named_tensors(after)
    names = select_names(a, include, exclude, biases)
    out = {}
    for name in names:
        if name not in b:
            raise TemplateError(f"{name!r} is in the first state dict but not in the second")
        x, y = a[name].detach(), b[name].detach()
        if x.shape != y.shape:
            raise TemplateError(f"shape mismatch for {name!r}: {tuple(x.shape)} vs {tuple(y.shape)}")
        out[name] = float((torch.sign(x) != torch.sign(y.to(x.device))).float().mean())
    return out


__all__ = ["RESET_METHODS", "Freezer", "impose", "reset_", "switch_fraction"]
