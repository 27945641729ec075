"""The exact representability decision on the four XOR corners: goodness flow on a 4-cycle.

Each hidden unit, by its sign type, offers one of at most two cones of goodness vectors
(sources, transfers between adjacent corners, bias directions); a choice of cones is feasible
iff no source-free, predecessor-closed corner set blocks it (Farkas).  The derivation is in
docs/theory.md ("Corners: the goodness-flow picture").
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from typing import NamedTuple, Sequence

__all__ = ["CORNERS", "LABELS"]

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
    """Farkas test of the goodness-flow LP (docs/theory.md): the nonempty,
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
