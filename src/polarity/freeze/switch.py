"""Polarity dynamics: how many signs a training step (or an epoch) switched, per parameter."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..template import Patterns, TemplateError, _named_tensors, select_names


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


__all__ = ["switch_fraction"]
