"""P(H): the probability that a randomly-signed width-H network can represent XOR.

Network variants (`VARIANTS`: bias treatment and support); the exact P(H), summed over the
multinomial counts of unit types (capped at 2) with the corners or squares decision, or a
Monte Carlo estimate with a Wilson interval; and `minimal_width`.  See docs/theory.md.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from .corners import _OUT_BIAS, CORNERS, LABELS, _cones, _corner, _decide_groups
from .reference import _check_int
from .squares import _square_patterns, _squares_rule, _squares_state
from .templates import representable

__all__ = ["Variant", "VARIANTS", "get_variant", "exact_probability", "minimal_width", "wilson_interval"]


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


# ----------------------------------------------------------------------------- exact enumeration

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


@lru_cache(maxsize=None)
def _squares_rule_states(types: tuple):
    """Capped-count states (a useful type capped at 1, a harmful one at 2) with `_squares_rule`'s
    decision: ((state, feasible), ...), caps."""
    caps = tuple(1 if t[2] == LABELS[_corner(t[0], t[1])] else 2 for t in types)
    states = []
    for state in itertools.product(*[range(c + 1) for c in caps]):
        units = [t for t, k in zip(types, state) for _ in range(k)]
        states.append((state, _squares_rule(units)))
    return tuple(states), caps


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


# ----------------------------------------------------------------------------- Monte Carlo

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


# ----------------------------------------------------------------------------- P(H) and minimal width

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
