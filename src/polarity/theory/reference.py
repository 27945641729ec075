"""The reference implementation's closed-form P(H) (SPEC §7), computed exactly.

Each hidden unit draws one of ``2^(d+1)`` equally likely sign patterns, half of them "useful";
P(H) is the probability of at least 3 distinct useful patterns among H units.  Which network
this counts, and why it sits below the exact curve, is in docs/theory.md.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["reference_probability", "reference_probability_exact"]


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
