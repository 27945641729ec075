"""Template diagnostics: how far a template's signs lean negative, how many output units a fresh
magnitude draw under them leaves silent behind a ReLU, and how far it agrees with another
template or a network's weights.  Definitions, the activity approximation's derivation and its
assumptions: docs/templates.md ("Diagnostics").

    d = diagnose(template)                   # per tensor and overall
    d = diagnose(template, other=init_model) # ... plus sign agreement with another side
    print(d)                                 # a table with an overall line
    d.overall.active_fraction, d.overall.silent_units      # fan-in aware: read these
    d.overall.negative_fraction, d.tensors["conv2.weight"].agreement, d.as_dict()  # JSON-able
    diagnose(template, input_ratio={"features.0.weight": 0.0})  # first layer: standardised pixels

Every figure counts constrained entries (+1 / -1) only; free entries (0) are counted apart.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

import torch
from torch import nn

from .core import Template
from .errors import TemplateError

DEAD_THRESHOLD = 0.9
"""A unit is dead-leaning when at least this fraction of its constrained incoming signs is -1."""

SILENT_BELOW = 0.05
"""A unit is silent when its expected probability of being active is below this."""

_TRUNC = 2.0  # init_glorot_ truncates its normal at 2 standard deviations
_PHI = math.exp(-_TRUNC ** 2 / 2) / math.sqrt(2 * math.pi)
_MASS = math.erf(_TRUNC / math.sqrt(2))
MAGNITUDE_RATIOS = {
    "half-normal": math.sqrt(2 / math.pi),
    "uniform": math.sqrt(3) / 2,
    "truncated-normal": (2 * (1 / math.sqrt(2 * math.pi) - _PHI) / _MASS)
                        / math.sqrt(1 - 2 * _TRUNC * _PHI / _MASS),
}
"""E|w| / sqrt(E w^2) of a weight's magnitude under each symmetric draw: |N(0, s)|, |U(-a, a)|
and |N(0, s)| truncated at 2 s (``init_glorot_``'s conv kernels).  ``"glorot"`` (the default)
is the library's ``init_glorot_``: truncated normal for conv kernels (dim > 2), uniform for
linear weights (dim 2)."""

RELU_INPUT_RATIO = 1 / math.sqrt(math.pi)
"""E x / sqrt(E x^2) of an input x = max(0, g), g a zero-mean normal: a ReLU's output."""


def magnitude_ratio(magnitudes: str | float, dim: int) -> float:
    """E|w| / sqrt(E w^2) for a tensor of ``dim`` dimensions under ``magnitudes`` (a name of
    :data:`MAGNITUDE_RATIOS`, ``"glorot"``, or the ratio itself, in (0, 1])."""
    if isinstance(magnitudes, str):
        if magnitudes == "glorot":
            return MAGNITUDE_RATIOS["truncated-normal" if dim > 2 else "uniform"]
        if magnitudes not in MAGNITUDE_RATIOS:
            raise TemplateError(f"magnitudes must be 'glorot', one of {sorted(MAGNITUDE_RATIOS)} "
                                f"or a ratio E|w|/sqrt(E w^2) in (0, 1], got {magnitudes!r}")
        return MAGNITUDE_RATIOS[magnitudes]
    if isinstance(magnitudes, bool) or not isinstance(magnitudes, (int, float)) \
            or not 0 < magnitudes <= 1:
        raise TemplateError(f"a magnitude ratio E|w|/sqrt(E w^2) must be in (0, 1], "
                            f"got {magnitudes!r}")
    return float(magnitudes)


def active_probability(positive: torch.Tensor, negative: torch.Tensor, free: torch.Tensor,
                       ratio: float) -> torch.Tensor:
    """Per unit, the probability that its pre-activation is > 0 on a fresh symmetric magnitude
    draw (free entries: a random sign), by the normal approximation of docs/templates.md:
    ``Phi(r (P - N) / sqrt(P + N + F - (P + N) r^2))`` with ``r`` the product of the magnitudes'
    and the inputs' mean / root-mean-square ratios; with no free entry that is
    ``Phi(c sqrt(n) (1 - 2q))``, ``c = r / sqrt(1 - r^2)``.  float64 counts in, float64 out."""
    if not 0 <= ratio <= 1:
        raise TemplateError(f"the ratio r must be in [0, 1], got {ratio!r}")
    n = positive + negative
    var = n + free - n * ratio ** 2
    lean = ratio * (positive - negative)
    z = torch.where(var > 0, lean / var.clamp_min(1e-300).sqrt(),
                    torch.where(lean > 0, math.inf, -math.inf))
    return torch.special.ndtr(z)


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
    expected_active: float  # sum over the units of their probability of being active
    silent_units: int  # units whose probability of being active is below silent_below
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
    def active_fraction(self) -> float:
        """Expected fraction of the units active behind a ReLU on a fresh magnitude draw."""
        return _fraction(self.expected_active, self.units)

    @property
    def silent_unit_fraction(self) -> float:
        """Silent units / units."""
        return _fraction(self.silent_units, self.units)

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
        out["active_fraction"] = self.active_fraction
        out["silent_unit_fraction"] = self.silent_unit_fraction
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
    silent_below: float = SILENT_BELOW
    magnitudes: str | float = "glorot"
    input_ratio: float = RELU_INPUT_RATIO  # every tensor's but those in input_ratios
    input_ratios: Mapping[str, float] = field(default_factory=dict)

    @property
    def compared(self) -> bool:
        return self.overall.compared is not None

    def as_dict(self) -> dict:
        return {"dead_threshold": self.dead_threshold, "silent_below": self.silent_below,
                "magnitudes": self.magnitudes, "input_ratio": self.input_ratio,
                "input_ratios": dict(self.input_ratios),
                "tensors": {k: v.as_dict() for k, v in self.tensors.items()},
                "overall": self.overall.as_dict()}

    def table(self, signs: bool = True) -> str:
        """The rows and the overall line; ``signs=False`` keeps only the agreement columns."""
        if not signs and not self.compared:
            raise TemplateError("a table of agreement only needs diagnose(..., other=...)")
        rows = [*self.tensors.values(), self.overall]
        width = max(len("parameter"), *(len(r.name) for r in rows))
        dead = f"dead units (>={self.dead_threshold * 100:g}% -1)"
        silent = f"silent (P<{self.silent_below * 100:g}%)"
        head = f"{'parameter':<{width}}  {'shape':>18}"
        if signs:
            head += (f"  {'signs':>12}  {'free':>10}  {'-1 frac':>7}  {dead:>24}  {'P(active)':>9}"
                     f"  {silent:>20}")
        if self.compared:
            head += f"  {'compared':>12}  {'agree':>6}"
        lines = [head]
        for r in rows:
            line = f"{r.name:<{width}}  {'' if r.shape is None else str(r.shape):>18}"
            if signs:
                units = _count(r.dead_units, r.units, r.dead_unit_fraction)
                quiet = _count(r.silent_units, r.units, r.silent_unit_fraction)
                line += (f"  {r.constrained:>12,}  {r.free:>10,}  {_num(r.negative_fraction):>7}  "
                         f"{units:>24}  {_num(r.active_fraction):>9}  {quiet:>20}")
            if self.compared:
                line += f"  {r.compared:>12,}  {_num(r.agreement):>6}"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"


def _count(k: int, units: int, fraction: float) -> str:
    return f"{k:,}/{units:,} {_num(fraction)}" if units else "-"


def unit_activity(t: torch.Tensor, magnitudes: str | float = "glorot",
                  input_ratio: float = RELU_INPUT_RATIO) -> torch.Tensor:
    """Per output unit (dim 0) of a sign tensor with at least one constrained entry, in order,
    the probability of :func:`active_probability` (float64; empty for a tensor of dim < 2)."""
    if t.dim() < 2 or not t.shape[0] or not t.numel():
        return torch.zeros(0, dtype=torch.float64)
    per = t.reshape(t.shape[0], -1)
    pos = (per > 0).sum(1, dtype=torch.float64)
    neg = (per < 0).sum(1, dtype=torch.float64)
    free = (per == 0).sum(1, dtype=torch.float64)
    has = pos + neg > 0
    ratio = magnitude_ratio(magnitudes, t.dim()) * float(input_ratio)
    return active_probability(pos[has], neg[has], free[has], ratio)


def _tensor(name: str, t: torch.Tensor, threshold: float, silent_below: float,
            magnitudes: str | float, input_ratio: float) -> TensorDiagnostics:
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
    p = unit_activity(t, magnitudes, input_ratio)
    return TensorDiagnostics(name, tuple(t.shape), n_con, t.numel() - n_con, int((t < 0).sum()),
                             units, dead, float(p.sum()), int((p < silent_below).sum()))


def diagnose(template: Template,
             other: Template | nn.Module | Mapping[str, torch.Tensor] | None = None,
             dead_threshold: float = DEAD_THRESHOLD, silent_below: float = SILENT_BELOW,
             magnitudes: str | float = "glorot",
             input_ratio: float | Mapping[str, float] = RELU_INPUT_RATIO) -> Diagnostics:
    """Per tensor of ``template`` and overall: the fraction of -1 among constrained entries; of
    the output units (dim 0: a conv filter, a linear layer's row), those whose constrained signs
    are at least ``dead_threshold`` negative, the expected fraction active behind a ReLU on a
    fresh symmetric magnitude draw under these signs (fan-in aware: :func:`active_probability`)
    and those whose probability of being active is below ``silent_below``; with ``other``, the
    sign agreement of :meth:`Template.agreement` (another template: entries constrained in both,
    names and shapes must match; a module or state dict: every constrained entry, a zero weight
    disagrees).

    ``magnitudes``: the draw (``"glorot"``, the library's ``init_glorot_``; a name of
    :data:`MAGNITUDE_RATIOS`; or E|w| / sqrt(E w^2) itself).  ``input_ratio``: E x / sqrt(E x^2)
    of a unit's inputs, a ReLU's output by default; a mapping gives it for the tensors it names
    (the others keep the default), e.g. 0 for a first layer reading standardised (zero-mean)
    pixels, whose units are then active with probability 0.5 whatever their signs."""
    if not isinstance(template, Template):
        raise TemplateError(f"diagnose needs a Template, got {type(template).__name__}")
    if not 0 < float(dead_threshold) <= 1:
        raise TemplateError(f"dead_threshold must be in (0, 1], got {dead_threshold!r}")
    if not 0 < float(silent_below) <= 1:
        raise TemplateError(f"silent_below must be in (0, 1], got {silent_below!r}")
    threshold, silent_below = float(dead_threshold), float(silent_below)
    if isinstance(input_ratio, Mapping):
        default, ratios = RELU_INPUT_RATIO, {k: float(v) for k, v in input_ratio.items()}
        unknown = [k for k in ratios if k not in template]
        if unknown:
            raise TemplateError(f"input_ratio names parameters the template does not have: "
                                f"{', '.join(unknown)}")
    else:
        default, ratios = float(input_ratio), {}
    for k, v in [("input_ratio", default), *ratios.items()]:
        if not 0 <= v <= 1:
            raise TemplateError(f"an input ratio E x/sqrt(E x^2) of non-negative inputs must be "
                                f"in [0, 1], got {v!r} ({k})")
    for dim in (2, 3):
        magnitude_ratio(magnitudes, dim)  # a bad name fails even without a unit
    rows = {k: _tensor(k, t, threshold, silent_below, magnitudes, ratios.get(k, default))
            for k, t in template.sign_tensors().items()}
    if other is not None:
        counts = template._agreement_counts(other)
        rows = {k: replace(r, same=counts[k][0], compared=counts[k][1]) for k, r in rows.items()}
    total = {f: sum(getattr(r, f) for r in rows.values())
             for f in ("constrained", "free", "negative", "units", "dead_units",
                       "expected_active", "silent_units")}
    if other is not None:
        total.update(compared=sum(r.compared for r in rows.values()),
                     same=sum(r.same for r in rows.values()))
    return Diagnostics(rows, TensorDiagnostics("overall", None, **total), threshold, silent_below,
                       magnitudes, default, ratios)


__all__ = ["DEAD_THRESHOLD", "MAGNITUDE_RATIOS", "RELU_INPUT_RATIO", "SILENT_BELOW", "Diagnostics",
           "TensorDiagnostics", "active_probability", "diagnose", "magnitude_ratio",
           "unit_activity"]
