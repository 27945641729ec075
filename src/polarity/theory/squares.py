"""Representability on the XOR-5D support: the closed quadrant squares, not just the corners.

A no-split LP (no hidden hyperplane cuts a square; sufficient) and a grid MILP (necessary)
bracket the exact answer; for free hidden and output biases the no-split answer reduces to a
rule on unit types (`_squares_rule`).  The derivation is in docs/theory.md ("Squares").
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from .corners import CORNERS, LABELS, _corner
from .lp import (_any_choice, _any_pattern_choice, _bias_bounds, _fixed_pattern_lp, _realisable_patterns,
                 _unit_keys)

__all__ = ["squares_representable"]


SQUARE_LO, SQUARE_HI = (-1.0, 0.0), (0.05, 1.05)  # SPEC §4: [-1, 0) and [0.05, 1.05)


def _square_vertices(n: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid points (n x n per square) of the closed quadrant squares, their labels and the
    square (= corner index) each belongs to."""
    pts, lab, sq = [], [], []
    for k, (c1, c2) in enumerate(CORNERS):
        r1 = SQUARE_HI if c1 > 0 else SQUARE_LO
        r2 = SQUARE_HI if c2 > 0 else SQUARE_LO
        for x1 in np.linspace(*r1, n):
            for x2 in np.linspace(*r2, n):
                pts.append((x1, x2)); lab.append(LABELS[k]); sq.append(k)
    return np.array(pts), np.array(lab, dtype=float), np.array(sq)


@lru_cache(maxsize=None)
def _square_patterns(s1: int, s2: int, bias_key) -> tuple[int, ...]:
    """Square-level activation patterns (bitmask over the 4 squares) that a unit with these
    signs realises without splitting any square (active on a whole square or inactive on it)."""
    pts, _, sq = _square_vertices(2)
    return _realisable_patterns(pts, sq, s1, s2, bias_key)


def _squares_nosplit_lp(units, patterns, ob) -> bool:
    """One LP: units active/inactive on whole squares as given; the output is then affine on each
    square, so it has the right sign on the square iff it has it at the square's 4 vertices."""
    pts, lab, sq = _square_vertices(2)
    return _fixed_pattern_lp(units, patterns, ob, pts, lab, sq)


def _squares_sufficient(rel, out, hb, ob) -> bool:
    """Sufficient: a solution in which no unit splits a square (exact for that restriction)."""
    return _any_pattern_choice(rel, out, hb, ob, _square_patterns, _squares_nosplit_lp)


def _squares_necessary(rel, out, hb, ob, grid: int = 3, tol: float = 1e-7) -> bool:
    """Necessary: exact (mixed-integer) decision on a finite grid of the squares (grid x grid
    points per square, vertices included).  Weights are scaled into a box (homogeneity), each
    ReLU is encoded with a binary and big-M constants valid on that box; the margin is
    maximised and must be positive."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    pts, lab, _ = _square_vertices(grid)
    units = []
    for key, count in _unit_keys(rel, out, hb):
        units += [key] * count
    h, k = len(units), len(pts)
    bmax = 3.0
    big = 2 * 1.05 + bmax + 1.0
    nv = 3 * h + 2 * h * k + 2
    ic, it = nv - 2, nv - 1
    lb, ub, integ = np.zeros(nv), np.zeros(nv), np.zeros(nv)
    rows, lo, hi = [], [], []
    for j, (s1, s2, sv, bkey) in enumerate(units):
        ub[3 * j] = ub[3 * j + 1] = 1.0
        bb = _bias_bounds(bkey)
        if bb is not None:
            lb[3 * j + 2] = -bmax if bb[0] is None else 0.0
            ub[3 * j + 2] = bmax if bb[1] is None else 0.0
        for i, (x1, x2) in enumerate(pts):
            ih = 3 * h + 2 * (j * k + i)
            ub[ih], ub[ih + 1], integ[ih + 1] = big, 1.0, 1
            pre = np.zeros(nv)
            pre[3 * j], pre[3 * j + 1], pre[3 * j + 2] = s1 * x1, s2 * x2, 1.0
            r = -pre.copy(); r[ih] = 1; rows.append(r); lo.append(0.0); hi.append(np.inf)
            r = -pre.copy(); r[ih] = 1; r[ih + 1] = big; rows.append(r); lo.append(-np.inf); hi.append(big)
            r = np.zeros(nv); r[ih] = 1; r[ih + 1] = -big; rows.append(r); lo.append(-np.inf); hi.append(0.0)
    cb = _bias_bounds(ob)
    cmax = big * max(h, 1)
    if cb is not None:
        lb[ic] = -cmax if cb[0] is None else 0.0
        ub[ic] = cmax if cb[1] is None else 0.0
    lb[it], ub[it] = -1.0, 1.0
    for i in range(k):
        r = np.zeros(nv)
        for j, (_, _, sv, _) in enumerate(units):
            r[3 * h + 2 * (j * k + i)] = lab[i] * sv
        r[ic] = lab[i]; r[it] = -1.0
        rows.append(r); lo.append(0.0); hi.append(np.inf)
    cost = np.zeros(nv); cost[it] = -1.0
    res = milp(cost, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integ,
               bounds=Bounds(lb, ub))
    return res.x is not None and -res.fun > tol


def squares_representable(rel, out, hb="free", ob="free", method: str = "fast") -> bool:
    """Representability on the XOR-5D support (the closed quadrant squares).

    ``method="fast"`` / ``"lp"``: the *no-split* decision - magnitudes exist with which no
    hidden unit's hyperplane cuts through a square.  Then the output is affine on each square
    and has the right sign on it iff it has it at the square's 4 vertices: for each choice of
    square-level activation patterns this is one LP (as for the corners), so the decision is
    exact for that restriction and a *sufficient* condition in general.  ``method="milp"``:
    the *necessary* condition - exact (mixed-integer) classification of a 3 x 3 grid of points
    per square (vertices, edge midpoints, centres).  The two agreed on every multiset of up to
    3 unit types and on the samples in the tests; where they would disagree the no-split
    answer is a lower bound.  Unlike the corners, a single useful unit cannot be active on its
    home square alone (separating the home square from both neighbours needs ``b > 20 a`` and
    ``a > 20 b``), which is why the squares need more units (3 with free biases, vs 2)."""
    rel = np.asarray(rel)
    if (rel == 0).any() or (np.asarray(out) == 0).any():
        raise ValueError("squares support: unconstrained (0) signs are not supported; enumerate them")
    hb_free = (isinstance(hb, str) and hb == "free") or (not isinstance(hb, str) and (np.asarray(hb) >= 0).all())
    if method == "fast" and hb_free and ob == "free":
        return _squares_rule([(int(a), int(b), int(c)) for (a, b), c in zip(np.asarray(rel).tolist(),
                                                                              np.asarray(out).tolist())])
    if method in ("fast", "lp"):
        return _squares_sufficient(rel, out, hb, ob)
    if method == "milp":
        return _squares_necessary(rel, out, hb, ob)
    raise ValueError(f"method must be 'fast', 'lp' or 'milp', got {method!r}")


@lru_cache(maxsize=200_000)
def _squares_state(state: tuple, kinds: tuple, ob: str) -> bool:
    """No-split decision for capped counts (a kind's count capped at its number of patterns)."""
    present = [(k, c) for k, c in zip(kinds, state) if c]
    if not present:
        return _squares_sufficient(np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64), "free", ob)
    # upper bound first: every pattern of every present kind
    units, pats = [], []
    for key, _ in present:
        pp = [p for p in _square_patterns(key[0], key[1], key[3]) if p]
        units += [key] * len(pp)
        pats += pp
    if not _squares_nosplit_lp(units, pats, ob):
        return False
    return _any_choice(present, ob, _square_patterns, _squares_nosplit_lp)


def _squares_rule(units: Sequence[tuple[int, int, int]]) -> bool:
    """The squares decision for free hidden and output biases, as a rule on unit types:
    representable iff
      (a) useful units at 3 distinct corners, or
      (b) a corner q with a useful and a harmful unit, plus one more unit that is not a useful
          unit at q (a second harmful unit at q, or any unit at another corner or sign), or
      (c) a useful unit at some corner q and harmful units at the three other corners.
    Derived from, and checked against, the no-split LP (`squares_representable(method="lp")`):
    equal on every multiset of up to 4 unit types and on random multisets of up to 13 (tests),
    and the grid MILP agrees on every multiset of up to 3."""
    useful, harmful, total = [0] * 4, [0] * 4, 0
    for s1, s2, sv in units:
        q = _corner(s1, s2)
        total += 1
        if sv == LABELS[q]:
            useful[q] += 1
        else:
            harmful[q] += 1
    uq = [q for q in range(4) if useful[q]]
    if len(uq) >= 3:
        return True
    for q in uq:
        if harmful[q] and (harmful[q] >= 2 or total - useful[q] - harmful[q] > 0):
            return True
        if all(harmful[o] for o in range(4) if o != q):
            return True
    return False
