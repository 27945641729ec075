"""Matching template entries to a model's tensors: wrapper prefixes and tied parameters
(see docs/templates.md)."""
from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from .errors import TemplateError
from .select import _named_tensors, canonical_name

@dataclass(frozen=True)
class Bound:
    """One model tensor a template constrains: its model ``name`` (the first of its names), the
    tensor, the stored sign tensor and every template entry that names it (several when the
    tensor is tied, e.g. an embedding shared with the output layer)."""

    name: str
    tensor: torch.Tensor
    sign: torch.Tensor
    entries: tuple[str, ...]


def bind(template: "Template", obj: nn.Module | Mapping[str, torch.Tensor]) -> list[Bound]:
    """Match every entry of ``template`` to a tensor of ``obj``, once per tensor, in template order.

    The one place where names are matched.  An entry matches the tensor of the same name, else
    the one whose :func:`canonical_name` is the entry's (a template of a plain model fits its
    ``torch.compile``'d or DDP-wrapped self, and the other way round).  Entries that name one
    tensor (a module's tied parameter, by identity) are constrained once and must give it the
    same signs.  Any entry that matches nothing, or matches a tensor of another shape, raises
    :class:`TemplateError`."""
    tensors = _named_tensors(obj, aliases=True)
    first: dict[int, str] = {}
    by_canonical: dict[str, set[int]] = {}
    for n, v in tensors.items():
        first.setdefault(id(v), n)
        by_canonical.setdefault(canonical_name(n), set()).add(id(v))
    by_id = {id(v): v for v in tensors.values()}
    found: dict[str, int] = {}
    missing = []
    for k in template:
        if k in tensors:
            found[k] = id(tensors[k])
            continue
        ids = by_canonical.get(canonical_name(k), ())
        if len(ids) == 1:
            (found[k],) = ids
        else:
            missing.append(k)
    if missing:
        names = list(_named_tensors(obj))
        near = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise TemplateError(
            f"template entries {missing[:5]}{' ...' if len(missing) > 5 else ''} match no "
            f"parameter of the model (its parameters: {near}); was the template made for "
            "another model? Use Template.adapt(model, rename=..., drop=...)"
        )
    signs = template.sign_tensors()
    out: dict[int, Bound] = {}
    for k, i in found.items():
        v, s = by_id[i], signs[k]
        if tuple(v.shape) != tuple(s.shape):
            alias = "" if first[i] == k else f" (model parameter {first[i]!r})"
            raise TemplateError(f"shape mismatch for {k!r}{alias}: template {tuple(s.shape)} vs "
                                f"model {tuple(v.shape)}")
        b = out.get(i)
        if b is None:
            out[i] = Bound(first[i], v, s, (k,))
            continue
        if not torch.equal(b.sign, s):
            n = int((b.sign != s).sum())
            raise TemplateError(
                f"template entries {b.entries[0]!r} and {k!r} name one tied parameter "
                f"({first[i]!r}) but give it different signs at {n} of {s.numel()} entries; a "
                "tied tensor has one sign pattern: drop one of the entries or make them agree"
            )
        out[i] = Bound(b.name, v, b.sign, b.entries + (k,))
    return list(out.values())


def violating(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Where ``w`` breaks the signs ``t``: ``w * t < 0``, or a NaN under a nonzero sign."""
    wrong = (w * t.to(w.dtype)) < 0
    if w.is_floating_point():
        wrong |= torch.isnan(w) & (t != 0)
    return wrong


def _dtensor_class():
    """torch's DTensor class when it has been imported (no DTensor can exist before)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A sharded tensor (DTensor) gathered whole (a collective: every rank must call it)."""
    dt = _dtensor_class()
    return t.full_tensor() if dt is not None and isinstance(t, dt) else t


def iter_pairs(
    template: Template, module: nn.Module
) -> Iterable[tuple[str, nn.Parameter, torch.Tensor]]:
    """(model name, parameter, stored sign tensor) for every parameter ``template`` constrains,
    once per parameter (a tied one once), in template order (:func:`bind`)."""
    for b in bind(template, module):
        yield b.name, b.tensor, b.sign
