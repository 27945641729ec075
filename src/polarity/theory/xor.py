r"""Can a single-hidden-layer ReLU network with fixed weight signs represent XOR?

This module gives (1) the reference implementation's closed-form probability (SPEC §7),
computed exactly, and (2) an *exact* decision of representability for a given sign
template, from which the exact probability P(H) that a randomly-signed network of width H
can represent XOR follows by enumeration (or Monte Carlo with a confidence interval where
enumeration is too large).

Notation
--------
Network ``y(x) = c + sum_j v_j relu(w_j . x + beta_j)`` with ``x in R^d``; the class is
``y > 0`` (label 1, i.e. ``x1*x2 > 0``) or ``y < 0`` (label 0).  Coordinates 0 and 1 are the
relevant ones, the others are noise.  A *template* fixes ``sign(w_j)`` (matrix ``[H, d]``) and
``sign(v_j)`` (``[H]``); the magnitudes are free (positive).  Biases are ``"none"`` (absent),
``"free"`` or sign-constrained (an array of +-1 per hidden unit / one sign for ``c``).

Representable means: there are magnitudes with which *every* point of the support is
classified correctly (strict inequalities).  Supports: ``"corners"`` - the four points
``(+-1, +-1)``; ``"squares"`` - the XOR-5D support of SPEC §4, the relevant pair ranging over
the closed quadrant squares ``[-1, 0] u [0.05, 1.05]`` (see ``squares`` below).

Noise inputs
------------
The noise coordinates are Normal(1, 1): unbounded.  Exact classification *for all* noise
values is impossible for any network with a nonzero noise weight: along a noise direction
``z = t e`` with ``t -> inf`` (every ``n_j . e != 0``) the set of active units becomes constant
and ``y`` tends to an affine function of the relevant pair plus a term linear in ``t``; either
that slope is nonzero (then all far points get one sign) or it cancels and what is left is an
affine function of ``(x1, x2)``, which cannot realise XOR.  We therefore require correct
classification for all noise values in every *bounded* set B (e.g. a ball holding probability
1 - delta of the noise, for any delta > 0).  That is equivalent to the noise-free problem:
(=>) a large enough B contains ``z = 0``, where the noise weights do nothing; (<=) a noise-free
solution has a positive margin m on the compact support, and since the noise weights'
magnitudes are free (positive, but as small as we like) they can be chosen so that
``|sum_k n_jk z_k| < m / (2 H max|v_j|)`` on B.  Hence **the signs of the noise weights are
irrelevant**: only ``(s1, s2, sv)`` of a unit (and its bias sign, if constrained) matters.  With
free hidden biases the equivalence holds for *every* nonempty bounded B (a fixed noise value
only shifts each hidden bias).  Without hidden biases the noise could act as a noisy bias,
but never one of a fixed sign with probability -> 1 (``n . z`` has mean/sd at most sqrt(3)),
so it cannot make an otherwise impossible template classify all but a vanishing fraction.

Strictness and closures
-----------------------
Feasibility of strict inequalities on a compact support is an open condition in the
parameters, so we may close the parameter set: magnitudes ``>= 0`` (a magnitude may be 0),
and limits of achievable contributions are allowed.  ReLU is positively homogeneous, so the
output magnitude of each unit can be absorbed into its input weights and bias; ``v_j = sv_j``.

Corners: the goodness-flow picture (the combinatorial decision)
---------------------------------------------------------------
Index the corners along the 4-cycle P1=(1,1), N1=(1,-1), P2=(-1,-1), N2=(-1,1) (labels
+,-,+,-; each corner is adjacent to the two that differ in one coordinate).  Write
``g_k = l_k y(x_k)`` (the *goodness* at corner k, ``l_k = +-1``); we need ``g > 0``.
A hidden unit with input signs ``(s1, s2)`` has a *home* corner ``q = (s1, s2)`` (where its
preactivation is largest), two adjacent corners A, B and the opposite corner O.  Its
preactivation ``p = a u + b w + beta`` (``u = s1 x1``, ``w = s2 x2``, ``a, b >= 0``) is monotone
(``p_q >= p_A, p_B >= p_O``) and modular (``p_q + p_O = p_A + p_B``).  Enumerating the
activation patterns, the closed set of vectors ``relu(p)`` is

* no hidden bias (or ``beta <= 0``): ``cone{e_q, e_q+e_A} u cone{e_q, e_q+e_B}``
  (``a >= b`` or ``a <= b``; ``p_O = -p_q``);
* free hidden bias (or ``beta >= 0``, which gives the same set):
  ``cone{e_q, e_q+e_A, e_q+e_B}`` (O inactive: ``r_q >= r_A + r_B``) ``u cone{1, e_q+e_A,
  e_q+e_B}`` (all active: the decomposition ``p = (beta-a-b) 1 + a(1+u) + b(1+w)``).

Multiplied by ``sv`` and read as goodness, the generators are of four kinds:

* ``sv e_q`` with ``sv = l_q`` (a **useful** unit: the output sign is the product of its two
  relevant input signs, SPEC §4's sufficient rule): a *source* of goodness at q;
  with ``sv = -l_q`` (a *harmful* unit) a pure loss, never of use;
* ``sv (e_q + e_A)``: for a harmful unit a *transfer* of goodness q -> A at rate 1 (q loses
  what A gains; the rate 1 is a limit ``b -> 0``, allowed by the closure); for a useful unit a
  transfer A -> q;
* ``sv 1`` (free hidden bias, all corners active): a *bias* in direction ``sv``: +t at the
  positive corners and -t at the negative ones (``sv = +1``) or the reverse;
* the output bias ``c``: the bias directions it allows (none, one, or both when free).

A unit of a given type offers one of its (at most two) maximal cones; two units of one type
offer both (the sum of two convex cones is their hull; a sum of copies of one convex cone is
that cone), so representability depends only on the counts of each type capped at 2.
Useful, no bias: {source q} (the transfers into a source are useless).  Useful, free bias:
{source q} or {bias sv, transfers A->q, B->q}.  Harmful, no bias: {q->A} or {q->B}.
Harmful, free bias: {bias sv, q->A, q->B} (one cone).

For one choice of cones the question is the linear feasibility problem ``G lambda >= 1,
lambda >= 0`` (homogeneity turns ``> 0`` into ``>= 1``).  By Gordan/Farkas it is infeasible
iff there is ``mu >= 0, mu != 0`` with ``mu . g <= 0`` for every generator, i.e. ``mu_q = 0``
at sources, ``mu_a <= mu_h`` for every transfer h -> a, ``D(mu) = sum_P mu - sum_N mu <= 0``
if bias ``+`` is available and ``>= 0`` if ``-`` is.  The cone of such ``mu`` (ignoring the
bias rows) is generated by the indicator vectors of the sets S that avoid the sources and are
closed under predecessors (``a in S`` and ``h -> a`` imply ``h in S``): every ``mu`` is the
integral of its level-set indicators.  Hence, with ``D(S) = |S n P| - |S n N|``:

    infeasible  <=>  some nonempty predecessor-closed, source-free S exists with
                     no bias:            any S;
                     only bias +:        D(S) <= 0;
                     only bias -:        D(S) >= 0;
                     both directions:    D(S) = 0, or two such sets with D > 0 and D < 0.

Representable iff some choice of cones (one per type present once, both per type present
twice or more) is feasible.  With no biases at all this is plain reachability: every corner
must be reachable from a useful unit's home along harmful units' transfers.  Consequences
(free hidden and output biases, the XOR-5D case): representable iff (both positive corners
have a useful unit) or (both negative corners do) or (some corner has a useful and a harmful
unit) or (exactly one useful type, and harmful units at both corners of the other label).  In
particular two useful units of the same label suffice (H = 2), and any 3 distinct useful types
suffice.  No biases: all four corners need a useful unit or a chain of harmful transfers from
one (H >= 4 even with free signs).  `representable(..., method="lp")` decides the same
question independently by enumerating the units' activation patterns and solving one linear
program (``scipy.optimize.linprog``) per pattern combination, in the original parameters.

Squares (the XOR-5D support)
----------------------------
The four corners lie inside the squares, so squares-representable implies corners-
representable; the converse fails.  A useful unit can no longer act on its home square alone
(separating the home square from both neighbours with a normal in the home quadrant needs
``b > 20 a`` and ``a > 20 b``), so e.g. two useful units of one label are not enough.  Two
checks bracket the exact answer (`squares_representable`):

* *no-split* (sufficient): magnitudes exist with which no hidden hyperplane cuts a square.
  Then ``y`` is affine on each square, and right on a square iff right at its 4 vertices; for
  each choice of square-level activation patterns (a unit with free bias realises {q, A},
  {q, B} or all four) that is one LP - exact for this restriction;
* *grid MILP* (necessary): exact mixed-integer classification of a 3 x 3 grid of points per
  square (big-M ReLU encoding on a box, which homogeneity allows).

They agree on every multiset of up to 3 unit types and on 40 random infeasible multisets of 4
(checked while building this module), so we take the no-split answer as the decision.  For
free hidden and output biases it reduces to a rule on unit types (`_squares_rule`, equal to the
no-split LP on all multisets of up to 4 types and on 1,500 random ones of up to 13; the tests
re-check samples): representable iff (a) useful units at 3 distinct corners, or (b) a useful
and a harmful unit at one corner q plus one more unit that is not useful at q, or (c) a useful
unit at q and harmful units at the three other corners.  Minimal width: 3 (vs 2 on the corners).
This rule is derived and verified, not proved; the probabilities built on it are exact given it.

The reference formula (SPEC §7) and which network it describes
--------------------------------------------------------------
Each unit draws one of ``2^(d+1)`` equally likely sign patterns (d input signs and the output
sign), half "useful"; P(H) = P(at least 3 *distinct* useful patterns among H units).  Its
"useful" is exactly SPEC §4's sufficient rule (output sign = product of the two relevant input
signs), and "3 distinct useful patterns" is clause (a) of the squares rule - the variant whose
assumptions it matches is the XOR-5D network on its squares (``"xor5d"``: hidden and output
biases present and free, noise inputs present).  But it counts sign patterns, not network
function: patterns that differ only in noise-input signs are distinct for it and identical for
the network (with ``d = 2`` - relevant signs only - it is exactly P(clause (a)), a lower bound
on the xor5d curve), and it ignores clauses (b) and (c), which let useful-plus-harmful
combinations represent XOR.  So it sits below the exact xor5d curve at every width
(0.11 vs 0.35 at H = 3, 0.47 vs 0.80 at H = 5).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "reference_probability", "reference_probability_exact", "Variant", "VARIANTS", "get_variant",
    "representable", "exact_probability", "minimal_width", "wilson_interval", "CORNERS",
]

# ----------------------------------------------------------------------------- reference

@lru_cache(maxsize=None)
def _q_ref(k: int, m: int, n: int, big_m: int) -> int:
    """The reference recursion: the number of length-n sequences over ``m`` useful and ``big_m``
    other patterns that use exactly ``k`` distinct useful patterns (for ``m = k``: all k)."""
    if k == 0:
        return big_m ** n
    return math.comb(m, k) * ((big_m + k) ** n - sum(_q_ref(p, k, n, big_m) for p in range(k)))


def _check_int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def reference_probability_exact(width: int, d: int = 5, useful: int | None = None,
                                required: int = 3) -> Fraction:
    """The reference formula exactly: P(at least ``required`` distinct useful patterns among
    ``width`` units), each unit drawing one of ``2^(d+1)`` equally likely patterns of which
    ``useful`` (default half) are useful.  ``Q(0,m,n,M) = M^n``,
    ``Q(k,m,n,M) = C(m,k) [(M+k)^n - sum_{p<k} Q(p,k,n,M)]``,
    ``P(n) = 1 - sum_{p<required} Q(p,m,n,M) / (m+M)^n``."""
    width = _check_int("width", width, 0)
    d = _check_int("d", d, 1)
    required = _check_int("required", required, 0)
    total = 2 ** (d + 1)
    useful = total // 2 if useful is None else _check_int("useful", useful, 0)
    if useful > total:
        raise ValueError(f"useful={useful} exceeds the number of sign patterns 2^(d+1)={total}")
    other = total - useful
    miss = sum(_q_ref(p, useful, width, other) for p in range(min(required, useful + 1)))
    return 1 - Fraction(miss, total ** width)


@lru_cache(maxsize=4096)
def reference_probability(width: int, d: int = 5, useful: int | None = None, required: int = 3) -> float:
    """`reference_probability_exact` as a float (cached)."""
    return float(reference_probability_exact(width, d, useful, required))


# ----------------------------------------------------------------------------- corners

CORNERS = ((1, 1), (1, -1), (-1, -1), (-1, 1))  # P1, N1, P2, N2: a 4-cycle
LABELS = (1, -1, 1, -1)
_POS = 0b0101
_NEG = 0b1010


def _corner(s1: int, s2: int) -> int:
    return CORNERS.index((int(s1), int(s2)))


def _adjacent(q: int) -> tuple[int, int]:
    return ((q + 1) % 4, (q + 3) % 4)


class _Cone(NamedTuple):
    sources: int = 0   # bitmask of corners
    edges: int = 0     # bitmask over the 8 directed edges of the 4-cycle (goodness moves h -> a)
    bias: int = 0      # bitmask: 1 = direction +, 2 = direction -


def _edge(h: int, a: int) -> int:
    if a == (h + 1) % 4:
        return 1 << (2 * h)
    if a == (h + 3) % 4:
        return 1 << (2 * h + 1)
    raise ValueError(f"corners {h} and {a} are not adjacent")


_EDGE_LIST = [(h, (h + 1) % 4) for h in range(4)] + [(h, (h + 3) % 4) for h in range(4)]
_EDGE_LIST.sort(key=lambda e: _edge(*e))
# subset tables: bit S of a mask stands for the corner set S (1..15)
_VIOL = []  # per edge: subsets S that are not predecessor-closed for it (a in S, h not in S)
for _h, _a in _EDGE_LIST:
    _VIOL.append(sum(1 << S for S in range(16) if (S >> _a) & 1 and not (S >> _h) & 1))
_VIOL_OR = [0] * 256
for _m in range(256):
    for _i in range(8):
        if (_m >> _i) & 1:
            _VIOL_OR[_m] |= _VIOL[_i]
_SRC_HIT = [sum(1 << S for S in range(16) if S & src) for src in range(16)]
_INTO = [0] * 16  # edges whose target lies in a source set
for _src in range(16):
    for _i, (_h, _a) in enumerate(_EDGE_LIST):
        if (_src >> _a) & 1:
            _INTO[_src] |= 1 << _i
_D = [bin(S & _POS).count("1") - bin(S & _NEG).count("1") for S in range(16)]
_NONEMPTY = sum(1 << S for S in range(1, 16))
_DPOS = sum(1 << S for S in range(1, 16) if _D[S] > 0)
_DNEG = sum(1 << S for S in range(1, 16) if _D[S] < 0)
_DZERO = sum(1 << S for S in range(1, 16) if _D[S] == 0)


@lru_cache(maxsize=None)
def _cones(q: int, sv: int, hidden_free: bool) -> tuple[_Cone, ...]:
    """Maximal cones (in goodness space) offered by one unit with home corner q, output sign sv."""
    a, b = _adjacent(q)
    useful = sv == LABELS[q]
    bias = 1 if sv > 0 else 2
    if useful:
        if hidden_free:
            return (_Cone(sources=1 << q), _Cone(edges=_edge(a, q) | _edge(b, q), bias=bias))
        return (_Cone(sources=1 << q),)
    if hidden_free:
        return (_Cone(edges=_edge(q, a) | _edge(q, b), bias=bias),)
    return (_Cone(edges=_edge(q, a)), _Cone(edges=_edge(q, b)))


def _feasible_flow(sources: int, edges: int, bias: int) -> bool:
    """Farkas test of the goodness-flow LP (see the module docstring): the nonempty,
    source-free, predecessor-closed corner sets S, and their D(S), decide."""
    valid = _NONEMPTY & ~(_SRC_HIT[sources] | _VIOL_OR[edges])
    if not valid:
        return True
    if bias == 0:
        return False
    if bias == 1:
        return not valid & (_DNEG | _DZERO)
    if bias == 2:
        return not valid & (_DPOS | _DZERO)
    return not (valid & _DZERO or (valid & _DPOS and valid & _DNEG))


_OUT_BIAS = {"none": 0, "+": 1, "-": 2, "free": 3}


def _reduce(cone: _Cone, sources: int, bias: int) -> _Cone:
    """Drop what a context already guarantees: sources, transfers into sources, bias directions."""
    return _Cone(cone.sources & ~sources, cone.edges & ~_INTO[sources], cone.bias & ~bias)


def _dominates(c1: _Cone, c2: _Cone) -> bool:
    # a source at a makes any transfer into a redundant (mu_a = 0 <= mu_h)
    return (not (c2.sources & ~c1.sources) and not (c2.bias & ~c1.bias)
            and not (c2.edges & ~(c1.edges | _INTO[c1.sources])))


def _decide_groups(groups: Sequence[tuple[tuple[_Cone, ...], int]], out_bias: int) -> bool:
    """groups: (cones of a unit kind, count).  Representable iff some choice of cones is
    feasible; a kind present k times offers any k of its cones (all when k >= #cones).
    Feasibility is monotone in the generators, which prunes the choices: a kind whose cones
    are all taken is fixed; a cone dominated by another of its kind (given what is fixed) is
    dropped; and if even the union of everything is infeasible, no choice is feasible."""
    fs, fe, fb = 0, 0, out_bias
    pending = []
    for cones, count in groups:
        if count <= 0:
            continue
        if count >= len(cones):
            for c in cones:
                fs, fe, fb = fs | c.sources, fe | c.edges, fb | c.bias
        else:
            pending.append((list(cones), count))
    s, e, b = fs, fe, fb
    for cones, _ in pending:
        for c in cones:
            s, e, b = s | c.sources, e | c.edges, b | c.bias
    if not _feasible_flow(s, e, b):
        return False
    changed = True
    while changed and pending:
        changed = False
        nxt = []
        for cones, count in pending:
            red = [_reduce(c, fs, fb) for c in cones]
            keep = []
            for i, c in enumerate(red):
                if any(j != i and _dominates(red[j], c) and (j < i or not _dominates(c, red[j]))
                       for j in range(len(red))):
                    continue
                keep.append(c)
            if len(keep) <= count:
                for c in keep:
                    fs, fe, fb = fs | c.sources, fe | c.edges, fb | c.bias
                changed = True
            else:
                nxt.append((keep, count))
        pending = nxt
    options = [tuple(itertools.combinations(cones, count)) for cones, count in pending]
    for choice in itertools.product(*options):
        s, e, b = fs, fe, fb
        for combo in choice:
            for c in combo:
                s, e, b = s | c.sources, e | c.edges, b | c.bias
        if _feasible_flow(s, e, b):
            return True
    return False


# ----------------------------------------------------------------------------- templates

def _as_sign_array(name: str, x, shape=None, allow_zero: bool = True) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric signs (+1/-1{'/0' if allow_zero else ''}), got dtype {a.dtype}")
    s = np.sign(a).astype(np.int64)
    if shape is not None and s.shape != shape:
        raise ValueError(f"{name} has shape {s.shape}, expected {shape}")
    if not allow_zero and (s == 0).any():
        raise ValueError(f"{name} contains 0 (unconstrained) entries, which this check does not allow")
    return s


def _normalise(w1_signs, out_signs, hidden_bias, output_bias, relevant):
    w1 = _as_sign_array("w1_signs", w1_signs)
    if w1.ndim != 2:
        raise ValueError(f"w1_signs must be a [H, d] matrix of signs, got shape {w1.shape}")
    h, d = w1.shape
    r0, r1 = relevant
    if not (0 <= r0 < d and 0 <= r1 < d and r0 != r1):
        raise ValueError(f"relevant={relevant} must name two different input columns of w1_signs (d={d})")
    out = _as_sign_array("out_signs", np.reshape(np.asarray(out_signs), -1) if not hasattr(out_signs, "detach")
                         else out_signs.reshape(-1), (h,))
    if isinstance(hidden_bias, str):
        if hidden_bias not in ("none", "free"):
            raise ValueError(f"hidden_bias must be 'none', 'free' or an array of {h} signs, got {hidden_bias!r}")
        hb = np.full(h, 1 if hidden_bias == "free" else -1, dtype=np.int64)  # beta>=0 == free; beta<=0 == none
        hb_raw = hidden_bias
    else:
        hb_raw = _as_sign_array("hidden_bias", hidden_bias, (h,))
        hb = np.where(hb_raw == 0, 1, hb_raw)  # 0 = unconstrained = free
    if isinstance(output_bias, str):
        if output_bias not in _OUT_BIAS:
            raise ValueError(f"output_bias must be 'none', 'free', '+', '-' or a sign, got {output_bias!r}")
        ob = output_bias
    else:
        v = float(np.asarray(output_bias).reshape(-1)[0]) if np.size(output_bias) == 1 else None
        if v is None:
            raise ValueError(f"output_bias must be a single sign, got {output_bias!r}")
        ob = "free" if v == 0 else ("+" if v > 0 else "-")
    return w1[:, [r0, r1]], out, hb, hb_raw, ob


def _unit_kinds(rel: np.ndarray, out: np.ndarray, hb: np.ndarray):
    """Group units by (s1, s2, sv, hidden-bias class); zeros (unconstrained) expand to unions."""
    kinds: dict[tuple, int] = {}
    for (s1, s2), sv, b in zip(rel.tolist(), out.tolist(), hb.tolist()):
        key = (s1, s2, sv, b > 0)
        kinds[key] = kinds.get(key, 0) + 1
    groups = []
    for (s1, s2, sv, free), count in sorted(kinds.items()):
        cones = []
        for t1 in ((1, -1) if s1 == 0 else (s1,)):
            for t2 in ((1, -1) if s2 == 0 else (s2,)):
                for tv in ((1, -1) if sv == 0 else (sv,)):
                    for c in _cones(_corner(t1, t2), tv, free):
                        if c not in cones:
                            cones.append(c)
        groups.append((tuple(cones), count))
    return groups


def representable(w1_signs, out_signs, hidden_bias="free", output_bias="free", *,
                  relevant: tuple[int, int] = (0, 1), support: str = "corners",
                  method: str = "fast") -> bool:
    """Can magnitudes be chosen so that the network classifies the XOR support correctly?

    ``w1_signs``: [H, d] signs of the first-layer weights (0 = unconstrained); ``out_signs``: [H]
    output signs; ``hidden_bias``: ``"none"`` | ``"free"`` | [H] signs; ``output_bias``: ``"none"`` |
    ``"free"`` | ``"+"`` | ``"-"`` | a sign.  ``relevant``: the two XOR coordinates (the others are
    noise and irrelevant, see the module docstring).  ``support``: ``"corners"`` or ``"squares"``
    (XOR-5D quadrant squares).  ``method``: ``"fast"`` (the combinatorial decision) or ``"lp"``
    (activation-pattern enumeration + linear programs; corners only, exponential in H)."""
    rel, out, hb, hb_raw, ob = _normalise(w1_signs, out_signs, hidden_bias, output_bias, relevant)
    if support == "squares":
        return squares_representable(rel, out, hb, ob, method=method)
    if support != "corners":
        raise ValueError(f"support must be 'corners' or 'squares', got {support!r}")
    if method == "fast":
        return _decide_groups(_unit_kinds(rel, out, hb), _OUT_BIAS[ob])
    if method == "lp":
        return _lp_representable(rel, out, hb_raw if not isinstance(hb_raw, str) else hb_raw, ob)
    raise ValueError(f"method must be 'fast' or 'lp', got {method!r}")


# ----------------------------------------------------------------------------- LP cross-check

_PTS = np.array(CORNERS, dtype=float)
_LAB = np.array(LABELS, dtype=float)


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


# ----------------------------------------------------------------------------- variants

@dataclass(frozen=True)
class Variant:
    """A network variant: how the biases are treated and which support must be classified.

    ``hidden_bias`` / ``output_bias``: ``"none"`` (absent), ``"free"`` (present, unconstrained)
    or ``"signed"`` (present, sign fixed by the random template like the weights)."""

    name: str
    hidden_bias: str
    output_bias: str
    support: str
    description: str

    def __post_init__(self):
        if self.hidden_bias not in ("none", "free", "signed"):
            raise ValueError(f"hidden_bias must be none|free|signed, got {self.hidden_bias!r}")
        if self.output_bias not in ("none", "free", "signed"):
            raise ValueError(f"output_bias must be none|free|signed, got {self.output_bias!r}")
        if self.support not in ("corners", "squares"):
            raise ValueError(f"support must be corners|squares, got {self.support!r}")


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("xor5d-corners", "free", "free", "corners",
            "SPEC §4 network (hidden and output biases present and free, noise inputs present), "
            "judged on the four XOR corners"),
    Variant("xor5d", "free", "free", "squares",
            "SPEC §4 network on its own support: the quadrant squares [-1,0] u [0.05,1.05] "
            "(biases free, noise inputs present)"),
    Variant("nobias", "none", "none", "corners",
            "no biases anywhere (sign patterns of weights only, as in the reference's counting), "
            "four corners"),
    Variant("signed-bias", "signed", "signed", "corners",
            "every bias present with a random frozen sign (Template(..., biases=True)), four corners"),
    Variant("output-bias", "none", "free", "corners",
            "no hidden biases, a free output bias, four corners"),
)}


def get_variant(variant) -> Variant:
    if isinstance(variant, Variant):
        return variant
    try:
        return VARIANTS[variant]
    except (KeyError, TypeError):
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}") from None


# ----------------------------------------------------------------------------- probabilities

_TYPES = tuple((s1, s2, sv) for (s1, s2) in CORNERS for sv in (1, -1))  # 8 relevant unit types
_SUFFICIENT_TYPES = tuple(t for t in _TYPES if t[2] == t[0] * t[1])  # the 4 useful types


def _type_cones(types, hidden_free: bool):
    return [_cones(_corner(s1, s2), sv, hidden_free) for (s1, s2, sv) in types]


@lru_cache(maxsize=None)
def _n_sequences(h: int, n1: int, nge1: int, nge2: int) -> int:
    """Number of length-h sequences over ``n1 + nge1 + nge2`` distinct symbols (other symbols
    absent) in which ``n1`` given symbols occur exactly once, ``nge1`` at least once and
    ``nge2`` at least twice: ``h! [x^h] x^n1 (e^x-1)^nge1 (e^x-1-x)^nge2``."""
    total = 0
    for a in range(nge1 + 1):
        ca = math.comb(nge1, a) * (-1) ** (nge1 - a)
        for b in range(nge2 + 1):
            for c in range(nge2 - b + 1):
                e = nge2 - b - c
                m = n1 + e
                if m > h:
                    continue
                coef = math.factorial(nge2) // (math.factorial(b) * math.factorial(c) * math.factorial(e))
                lam = a + b
                term = math.factorial(h) // math.factorial(h - m) * (lam ** (h - m) if h - m else 1)
                total += ca * coef * (-1) ** (c + e) * term
    return total


@lru_cache(maxsize=None)
def _feasible_states(types: tuple, hidden_free: bool, out_bias: int) -> tuple:
    """All capped-count states (count per type capped at its number of cones) with their
    decision: ((caps...), feasible)."""
    cones = _type_cones(types, hidden_free)
    ranges = [range(len(c) + 1) for c in cones]
    out = []
    for state in itertools.product(*ranges):
        out.append((state, _decide_groups(list(zip(cones, state)), out_bias)))
    return tuple(out), tuple(len(c) for c in cones)


def _exact_enumerated(width: int, types: tuple, hidden_free: bool, out_bias: int) -> Fraction:
    return _enumerate(width, len(types), *_feasible_states(types, hidden_free, out_bias))


def _enumerate(width: int, n_types: int, states, caps) -> Fraction:
    """Exact P over equiprobable unit types: sum the number of sequences of every feasible
    capped-count state (caps are 1 or 2) over ``n_types ** width``."""
    num = 0
    for state, ok in states:
        if not ok:
            continue
        n1 = nge1 = nge2 = 0
        for k, cap in zip(state, caps):
            if k == 0:
                continue
            if k < cap:
                n1 += 1  # exactly once (caps are at most 2)
            elif cap == 1:
                nge1 += 1
            else:
                nge2 += 1
        num += _n_sequences(width, n1, nge1, nge2)
    return Fraction(num, n_types ** width)


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def _sample_decisions(width: int, v: Variant, template: str, samples: int, seed: int) -> int:
    """Monte Carlo: draw templates, decide each through a cache keyed by the capped type counts."""
    rng = np.random.default_rng(seed)
    types = _SUFFICIENT_TYPES if template == "sufficient" else _TYPES
    hid_kinds = (True, False) if v.hidden_bias == "signed" else ((v.hidden_bias == "free"),)
    out_modes = ("+", "-") if v.output_bias == "signed" else ({"none": "none", "free": "free"}[v.output_bias],)
    kinds = [(t, hf) for t in types for hf in hid_kinds]
    cone_lists = [_cones(_corner(t[0], t[1]), t[2], hf) for t, hf in kinds]
    caps = np.array([len(c) for c in cone_lists])
    draws = rng.integers(0, len(kinds), size=(samples, width))
    outs = rng.integers(0, len(out_modes), size=samples)
    counts = np.zeros((samples, len(kinds)), dtype=np.int64)
    for k in range(len(kinds)):
        counts[:, k] = (draws == k).sum(axis=1)
    capped = np.minimum(counts, caps)
    keys, inv = np.unique(np.column_stack([capped, outs]), axis=0, return_inverse=True)
    ok = np.array([_decide_cached(tuple(int(x) for x in key[:-1]), tuple(kinds), out_modes[int(key[-1])])
                   for key in keys], dtype=bool)
    return int(ok[np.asarray(inv).reshape(-1)].sum())


@lru_cache(maxsize=200_000)
def _decide_cached(state: tuple, kinds: tuple, out_mode: str) -> bool:
    return _decide_groups(list(zip(_kind_cones(kinds), state)), _OUT_BIAS[out_mode])


@lru_cache(maxsize=64)
def _kind_cones(kinds: tuple) -> tuple:
    return tuple(_cones(_corner(t[0], t[1]), t[2], hf) for t, hf in kinds)


@lru_cache(maxsize=4096)
def _exact_probability(width, variant_name_key, v: Variant, method, samples, seed, template):
    if v.support == "squares":
        if v.hidden_bias == "free" and v.output_bias == "free" and method in ("auto", "enumerate"):
            # the rule of `_squares_rule` (verified against the no-split LP); "montecarlo" runs the LP
            types = _SUFFICIENT_TYPES if template == "sufficient" else _TYPES
            p = float(_enumerate(width, len(types), *_squares_rule_states(types)))
            return p, p, p
        return squares_probability(width, v, method=method, samples=samples, seed=seed, template=template)
    types = _SUFFICIENT_TYPES if template == "sufficient" else _TYPES
    can_enumerate = v.hidden_bias in ("none", "free")
    if method == "auto":
        method = "enumerate" if can_enumerate else "montecarlo"
    if method == "enumerate":
        if not can_enumerate:
            raise ValueError(f"variant {v.name!r} (signed hidden biases) has 16 unit types; "
                             "use method='montecarlo'")
        hf = v.hidden_bias == "free"
        if v.output_bias == "signed":
            p = (_exact_enumerated(width, types, hf, _OUT_BIAS["+"])
                 + _exact_enumerated(width, types, hf, _OUT_BIAS["-"])) / 2
        else:
            p = _exact_enumerated(width, types, hf, _OUT_BIAS[v.output_bias])
        p = float(p)
        return p, p, p
    if method == "montecarlo":
        k = _sample_decisions(width, v, template, samples, seed)
        lo, hi = wilson_interval(k, samples)
        return k / samples, lo, hi
    raise ValueError(f"method must be 'auto', 'enumerate' or 'montecarlo', got {method!r}")


def exact_probability(width: int, variant="xor5d-corners", method: str = "auto", samples: int = 20000,
                      seed: int = 0, template: str = "rand") -> tuple[float, float, float]:
    """P(a network of this width with random frozen signs can represent XOR) -> ``(p, lo, hi)``.

    ``template="rand"``: every weight sign (and, for ``signed`` variants, bias sign) is +-1 with
    probability 1/2; ``"sufficient"``: first-layer signs random, output sign = product of the two
    relevant input signs (SPEC §4).  ``method="enumerate"`` sums the exact decision over the
    multinomial counts of unit types (capped at 2; exact rational arithmetic, then float;
    ``lo == hi == p``); ``"montecarlo"`` draws ``samples`` templates and returns a 95% Wilson
    interval; ``"auto"`` enumerates where it can.  Results are cached."""
    width = _check_int("width", width, 0)
    v = get_variant(variant)
    if template not in ("rand", "sufficient"):
        raise ValueError(f"template must be 'rand' or 'sufficient', got {template!r}")
    samples = _check_int("samples", samples, 1)
    return _exact_probability(width, v.name, v, method, samples, int(seed), template)


def minimal_width(variant="xor5d-corners", template: str = "free", max_width: int = 12) -> int | None:
    """The smallest width at which *some* network of the kind can represent XOR (None if none up
    to ``max_width``).  ``template="free"``: signs unconstrained (a Fluid-Net: any sign types);
    ``"sufficient"``: a template obeying SPEC §4's sufficient rule; ``"rand"``: same as free
    (some random draw has positive probability).  Decided with the same exact machinery."""
    v = get_variant(variant)
    types = _SUFFICIENT_TYPES if template == "sufficient" else _TYPES
    if template not in ("free", "sufficient", "rand"):
        raise ValueError(f"template must be 'free', 'sufficient' or 'rand', got {template!r}")
    hb_opts = {"none": ("none",), "free": ("free",), "signed": ("+", "-")}[v.hidden_bias]
    ob_opts = {"none": ("none",), "free": ("free",), "signed": ("+", "-")}[v.output_bias]
    for h in range(0, max_width + 1):
        for combo in itertools.combinations_with_replacement(types, h):
            w1 = np.array([[t[0], t[1]] for t in combo], dtype=np.int64).reshape(h, 2)
            out = np.array([t[2] for t in combo], dtype=np.int64)
            for hb in itertools.product(hb_opts, repeat=h) if v.hidden_bias == "signed" else (hb_opts[0],):
                hbv = np.array([1 if s == "+" else -1 for s in hb]) if v.hidden_bias == "signed" else hb
                for ob in ob_opts:
                    if representable(w1, out, hbv, ob, support=v.support):
                        return h
    return None


# ----------------------------------------------------------------------------- squares

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


def squares_bounds(rel, out, hb="free", ob="free") -> tuple[bool, bool]:
    """(sufficient, necessary) checks for the XOR-5D support; see `squares_representable`."""
    return _squares_sufficient(rel, out, hb, ob), _squares_necessary(rel, out, hb, ob)


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


def squares_probability(width: int, v: Variant, method: str = "auto", samples: int = 2000, seed: int = 0,
                        template: str = "rand") -> tuple[float, float, float]:
    """Monte Carlo P(H) on the squares (no-split decision, cached by capped type counts)."""
    if method not in ("auto", "montecarlo"):
        raise ValueError(f"variant {v.name!r} (squares) supports method 'montecarlo' (or 'auto') only")
    rng = np.random.default_rng(seed)
    types = _SUFFICIENT_TYPES if template == "sufficient" else _TYPES
    hid = {"none": ("none",), "free": ("free",), "signed": (1, -1)}[v.hidden_bias]
    outs = {"none": ("none",), "free": ("free",), "signed": ("+", "-")}[v.output_bias]
    kinds = tuple((t[0], t[1], t[2], b) for t in types for b in hid)
    caps = np.array([len([p for p in _square_patterns(k[0], k[1], k[3]) if p]) for k in kinds])
    draws = rng.integers(0, len(kinds), size=(samples, width))
    obs = rng.integers(0, len(outs), size=samples)
    counts = np.stack([(draws == k).sum(axis=1) for k in range(len(kinds))], axis=1) if width else \
        np.zeros((samples, len(kinds)), dtype=np.int64)
    capped = np.minimum(counts, caps)
    keys, inv = np.unique(np.column_stack([capped, obs]), axis=0, return_inverse=True)
    ok = np.array([_squares_state(tuple(int(x) for x in key[:-1]), kinds, outs[int(key[-1])]) for key in keys],
                  dtype=bool)
    k = int(ok[np.asarray(inv).reshape(-1)].sum())
    lo, hi = wilson_interval(k, samples)
    return k / samples, lo, hi


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


@lru_cache(maxsize=None)
def _squares_rule_states(types: tuple):
    caps = tuple(1 if t[2] == LABELS[_corner(t[0], t[1])] else 2 for t in types)
    states = []
    for state in itertools.product(*[range(c + 1) for c in caps]):
        units = [t for t, k in zip(types, state) for _ in range(k)]
        states.append((state, _squares_rule(units)))
    return tuple(states), caps
