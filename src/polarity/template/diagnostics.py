"""Template diagnostics: how far a template's signs lean negative, how many output units they
leave dead behind a ReLU, and how far it agrees with another template or a network's weights.
Definitions and why they matter: docs/templates.md ("Diagnostics").

    d = diagnose(template)                   # per tensor and overall
    d = diagnose(template, other=init_model) # ... plus sign agreement with another side
    print(d)                                 # a table with an overall line
    d.overall.negative_fraction, d.tensors["conv2.weight"].agreement, d.as_dict()  # JSON-able

Every figure counts constrained entries (+1 / -1) only; free entries (0) are counted apart.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from .core import Template
from .errors import TemplateError

DEAD_THRESHOLD = 0.9
"""A unit is dead-leaning when at least this fraction of its constrained incoming signs is -1."""


def _fraction(num: int, den: int) -> float:
    return num / den if den else float("nan")


@dataclass(frozen=True)
class TensorDiagnostics:
    """Counts for one tensor, or summed over all of them (``overall``); fractions derive from
    the counts, so the overall ones are weighted by entries (by units for dead units)."""

    name: str
    shape: tuple[int, ...] | None  # None for the overall line
    constrained: int  # entries with a sign, +1 or -1
    free: int  # entries that are 0 (unconstrained); in no fraction's numerator or denominator
    negative: int  # constrained entries that are -1
    units: int  # output units (dim 0 of a tensor with dim >= 2) with >= 1 constrained entry
    dead_units: int  # of those, units whose constrained signs are >= the threshold negative
    compared: int | None = None  # entries compared with the other side; None: no comparison
    same: int | None = None  # of those, entries whose sign equals the other side's

    @property
    def negative_fraction(self) -> float:
        """-1 entries / constrained entries (NaN when none is constrained)."""
        return _fraction(self.negative, self.constrained)

    @property
    def dead_unit_fraction(self) -> float:
        """Dead-leaning units / units (NaN when the tensor has no units, e.g. a bias)."""
        return _fraction(self.dead_units, self.units)

    @property
    def agreement(self) -> float | None:
        """Equal signs / compared entries (NaN when none is compared; None without a comparison)."""
        return None if self.compared is None else _fraction(self.same, self.compared)

    def as_dict(self) -> dict:
        """Counts and fractions as JSON values (NaN as None)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        else:
            del out["shape"]
        out["negative_fraction"] = self.negative_fraction
        out["dead_unit_fraction"] = self.dead_unit_fraction
        if self.compared is None:
            del out["compared"], out["same"]
        else:
            out["agreement"] = self.agreement
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


@dataclass(frozen=True)
class Diagnostics:
    """:func:`diagnose`'s result: one row per tensor (in template order) and the overall row;
    ``str()`` is a table ending with the overall line."""

    tensors: Mapping[str, TensorDiagnostics]
    overall: TensorDiagnostics
    dead_threshold: float

    @property
    def compared(self) -> bool:
        return self.overall.compared is not None

    def as_dict(self) -> dict:
        return {"dead_threshold": self.dead_threshold,
                "tensors": {k: v.as_dict() for k, v in self.tensors.items()},
                "overall": self.overall.as_dict()}

    def table(self, signs: bool = True) -> str:
        """The rows and the overall line; ``signs=False`` keeps only the agreement columns."""
        if not signs and not self.compared:
            raise TemplateError("a table of agreement only needs diagnose(..., other=...)")
        rows = [*self.tensors.values(), self.overall]
        width = max(len("parameter"), *(len(r.name) for r in rows))
        dead = f"dead units (>={self.dead_threshold * 100:g}% -1)"
        head = f"{'parameter':<{width}}  {'shape':>18}"
        if signs:
            head += f"  {'signs':>12}  {'free':>10}  {'-1 frac':>7}  {dead:>24}"
        if self.compared:
            head += f"  {'compared':>12}  {'agree':>6}"
        lines = [head]
        for r in rows:
            line = f"{r.name:<{width}}  {'' if r.shape is None else str(r.shape):>18}"
            if signs:
                units = f"{r.dead_units:,}/{r.units:,} {_num(r.dead_unit_fraction)}" if r.units else "-"
                line += (f"  {r.constrained:>12,}  {r.free:>10,}  {_num(r.negative_fraction):>7}  "
                         f"{units:>24}")
            if self.compared:
                line += f"  {r.compared:>12,}  {_num(r.agreement):>6}"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"


def _tensor(name: str, t: torch.Tensor, threshold: float) -> TensorDiagnostics:
    constrained = t != 0
    n_con = int(constrained.sum())
    units = dead = 0
    if t.dim() >= 2 and t.shape[0]:
        per = t.reshape(t.shape[0], -1) if t.numel() else t.new_zeros(t.shape[0], 0)
        con = (per != 0).sum(1, dtype=torch.float64)
        neg = (per < 0).sum(1, dtype=torch.float64)
        has = con > 0
        units = int(has.sum())
        dead = int((neg[has] / con[has] >= threshold).sum())
    return TensorDiagnostics(name, tuple(t.shape), n_con, t.numel() - n_con, int((t < 0).sum()),
                             units, dead)


def diagnose(template: Template,
             other: Template | nn.Module | Mapping[str, torch.Tensor] | None = None,
             dead_threshold: float = DEAD_THRESHOLD) -> Diagnostics:
    """Per tensor of ``template`` and overall: the fraction of -1 among constrained entries, the
    fraction of output units (dim 0: a conv filter, a linear layer's row) whose constrained
    signs are at least ``dead_threshold`` negative, and, with ``other``, the sign agreement of
    :meth:`Template.agreement` (another template: entries constrained in both, names and shapes
    must match; a module or state dict: every constrained entry, a zero weight disagrees)."""
    if not isinstance(template, Template):
        raise TemplateError(f"diagnose needs a Template, got {type(template).__name__}")
    if not 0 < float(dead_threshold) <= 1:
        raise TemplateError(f"dead_threshold must be in (0, 1], got {dead_threshold!r}")
    threshold = float(dead_threshold)
    rows = {k: _tensor(k, t, threshold) for k, t in template.sign_tensors().items()}
    if other is not None:
        counts = template._agreement_counts(other)
        rows = {k: replace(r, same=counts[k][0], compared=counts[k][1]) for k, r in rows.items()}
    total = {f: sum(getattr(r, f) for r in rows.values())
             for f in ("constrained", "free", "negative", "units", "dead_units")}
    if other is not None:
        total.update(compared=sum(r.compared for r in rows.values()),
                     same=sum(r.same for r in rows.values()))
    return Diagnostics(rows, TensorDiagnostics("overall", None, **total), threshold)


__all__ = ["DEAD_THRESHOLD", "Diagnostics", "TensorDiagnostics", "diagnose"]
