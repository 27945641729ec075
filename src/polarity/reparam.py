"""Reparametrised polarity: ``w = T * g(v)`` through ``torch.nn.utils.parametrize``.

An alternative to Freeze-SGD's projection: the optimizer updates an unconstrained ``v`` and the
weight the module sees always has the template's sign (for entries with ``T = 0`` the weight is
``v`` itself).  ``g`` maps reals to non-negative magnitudes:

* ``"abs"``:      g(v) = |v|        (v initialised to |w|; same gradient magnitudes as w)
* ``"softplus"``: g(v) = log(1+e^v) (v initialised to softplus⁻¹(|w|))
* ``"exp"``:      g(v) = e^v        (v initialised to log|w|; weights never reach zero)

Usage::

    names = reparametrize(model, template, fn="softplus")   # weights keep their current |w|
    ...train with any optimizer...
    unreparametrize(model)                                  # bake the weights back in
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .template import Template, iter_pairs

_TINY = 1e-12


class SignedMagnitude(nn.Module):
    """Parametrization ``v -> T * g(v)`` (``v`` where ``T == 0``)."""

    FNS = ("abs", "softplus", "exp")

    def __init__(self, sign: torch.Tensor, fn: str = "softplus"):
        super().__init__()
        if fn not in self.FNS:
            raise ValueError(f"unknown magnitude function {fn!r}; choose one of {', '.join(self.FNS)}")
        self.fn = fn
        self.register_buffer("sign", sign.to(torch.int8), persistent=True)

    def _g(self, v):
        if self.fn == "abs":
            return v.abs()
        if self.fn == "softplus":
            return nn.functional.softplus(v)
        return v.exp()

    def _g_inv(self, m):
        if self.fn == "abs":
            return m
        if self.fn == "softplus":
            m = m.clamp_min(_TINY)
            return m + torch.log(-torch.expm1(-m))  # softplus^-1, stable
        return m.clamp_min(_TINY).log()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        t = self.sign.to(v.dtype)
        return torch.where(self.sign == 0, v, t * self._g(v))

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.sign == 0, w, self._g_inv(w.abs()))


def reparametrize(module: nn.Module, template: Template, fn: str = "softplus") -> list[str]:
    """Register :class:`SignedMagnitude` on every templated parameter of ``module`` (in place).
    The current weights are kept in magnitude and given the template's signs.  Returns the
    parameter names.  Build the optimizer *after* this call (the trainable tensors change)."""
    names = []
    for name, p, t in list(iter_pairs(template, module)):
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        parametrize.register_parametrization(owner, attr, SignedMagnitude(t.to(p.device), fn))
        names.append(name)
    return names


def unreparametrize(module: nn.Module) -> None:
    """Remove every :class:`SignedMagnitude`, leaving plain parameters with the current weights."""
    for sub in list(module.modules()):
        if parametrize.is_parametrized(sub):
            for attr in list(sub.parametrizations.keys()):
                if any(isinstance(p, SignedMagnitude) for p in sub.parametrizations[attr]):
                    parametrize.remove_parametrizations(sub, attr, leave_parametrized=True)
