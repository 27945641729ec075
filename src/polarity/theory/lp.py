"""LP cross-checks: activation-pattern enumeration with one linear program per choice.

Exponential in the width, so used by the tests (and ``representable(..., method="lp")``) to
check the combinatorial decision of `corners` independently, in the original parameters; the
pattern-choice search is shared with the no-split check of `squares`.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from .corners import CORNERS, LABELS

__all__: list[str] = []


def _bias_bounds(mode) -> tuple[float | None, float | None] | None:
    """None = the variable is absent."""
    if isinstance(mode, str):
        return {"none": None, "free": (None, None), "+": (0, None), "-": (None, 0)}[mode]
    m = int(mode)
    return (None, None) if m == 0 else ((0, None) if m > 0 else (None, 0))


def _realisable_patterns(points, groups, s1: int, s2: int, bias_key) -> tuple[int, ...]:
    """Bitmasks over the point groups (bit k = active on every point of group k) that a unit with
    input signs (s1, s2) and bias mode ``bias_key`` realises: one LP feasibility check each, with
    active points strictly positive (margin 1) and inactive points at most 0."""
    from scipy.optimize import linprog

    bb = _bias_bounds(bias_key)
    pats = []
    for mask in range(16):
        rows, rhs = [], []
        for (x1, x2), k in zip(points, groups):
            coef = [s1 * x1, s2 * x2] + ([1.0] if bb is not None else [])
            if (mask >> k) & 1:
                rows.append([-c for c in coef]); rhs.append(-1.0)
            else:
                rows.append(coef); rhs.append(0.0)
        bounds = [(0, None), (0, None)] + ([bb] if bb is not None else [])
        res = linprog(np.zeros(len(bounds)), A_ub=np.array(rows), b_ub=np.array(rhs), bounds=bounds,
                      method="highs")
        if res.status == 0:
            pats.append(mask)
    return tuple(pats)


@lru_cache(maxsize=None)
def _unit_patterns(s1: int, s2: int, bias_key) -> tuple[int, ...]:
    """Activation patterns (bitmask over the points) a unit with these signs can realise with its
    active points strictly positive - every other weakly-satisfied pattern gives the same outputs
    as one of these."""
    return _realisable_patterns(CORNERS, range(len(CORNERS)), s1, s2, bias_key)


def _fixed_pattern_lp(units, patterns, ob, points, labels, groups) -> bool:
    """One LP: is there a magnitude assignment under which every unit is active exactly on the
    point groups its pattern says (bit k of ``mask`` for group k) and the output classifies every
    point with margin 1?  Variables per unit: a, b, [beta]; then the output bias [c]."""
    from scipy.optimize import linprog

    cols, bounds = [], []
    for (s1, s2, sv, bkey) in units:
        bb = _bias_bounds(bkey)
        cols.append(len(bounds))
        bounds += [(0, None), (0, None)] + ([bb] if bb is not None else [])
    cb = _bias_bounds(ob)
    c_idx = len(bounds) if cb is not None else None
    if cb is not None:
        bounds.append(cb)
    nv = len(bounds)
    if nv == 0:  # no parameters at all: y = 0 everywhere
        return False
    rows, rhs = [], []
    for (x1, x2), lab, k in zip(points, labels, groups):
        y = np.zeros(nv)
        for (s1, s2, sv, bkey), mask, j in zip(units, patterns, cols):
            pre = np.zeros(nv)
            pre[j], pre[j + 1] = s1 * x1, s2 * x2
            if _bias_bounds(bkey) is not None:
                pre[j + 2] = 1.0
            if (mask >> k) & 1:
                rows.append(-pre); rhs.append(0.0)
                y += sv * pre
            else:
                rows.append(pre); rhs.append(0.0)
        if c_idx is not None:
            y[c_idx] += 1.0
        rows.append(-lab * y); rhs.append(-1.0)
    res = linprog(np.zeros(nv), A_ub=np.array(rows), b_ub=np.array(rhs), bounds=bounds, method="highs")
    return res.status == 0


def _lp_one(units, patterns, ob) -> bool:
    return _fixed_pattern_lp(units, patterns, ob, CORNERS, LABELS, range(len(CORNERS)))


def _lp_representable(rel, out, hb, ob) -> bool:
    """Brute force: every combination of activation patterns, one LP each (small H only)."""
    if (rel == 0).any() or (out == 0).any():
        # unconstrained signs: try every sign assignment
        free = [(i, j) for i in range(rel.shape[0]) for j in range(2) if rel[i, j] == 0]
        freev = [i for i in range(out.shape[0]) if out[i] == 0]
        for bits in itertools.product((1, -1), repeat=len(free) + len(freev)):
            r, o = rel.copy(), out.copy()
            for (i, j), s in zip(free, bits):
                r[i, j] = s
            for i, s in zip(freev, bits[len(free):]):
                o[i] = s
            if _lp_representable(r, o, hb, ob):
                return True
        return False
    return _any_pattern_choice(rel, out, hb, ob, _unit_patterns, _lp_one)


def _unit_keys(rel, out, hb):
    """Hidden-unit sign types (s1, s2, output sign, bias key) with their counts, in a fixed order."""
    bkeys = [hb] * rel.shape[0] if isinstance(hb, str) else [int(b) for b in np.asarray(hb).tolist()]
    kinds: dict[tuple, int] = {}
    for (s1, s2), sv, bk in zip(rel.tolist(), out.tolist(), bkeys):
        kinds[(s1, s2, sv, bk)] = kinds.get((s1, s2, sv, bk), 0) + 1
    return sorted(kinds.items(), key=str)


def _any_pattern_choice(rel, out, hb, ob, patterns_of, lp) -> bool:
    """Try every choice of distinct non-empty activation patterns per unit type (units of one type
    beyond the number of its patterns add nothing); True when ``lp`` finds magnitudes for one."""
    return _any_choice(_unit_keys(rel, out, hb), ob, patterns_of, lp)


def _any_choice(kind_counts, ob, patterns_of, lp) -> bool:
    """``_any_pattern_choice`` for unit types given as ((s1, s2, output sign, bias key), count)."""
    per_kind = []
    for key, count in kind_counts:
        pats = [p for p in patterns_of(key[0], key[1], key[3]) if p]
        per_kind.append([(key, combo) for combo in itertools.combinations(pats, min(count, len(pats)))])
    for choice in itertools.product(*per_kind):
        units, pats = [], []
        for key, combo in choice:
            for p in combo:
                units.append(key); pats.append(p)
        if lp(units, pats, ob):
            return True
    return False
