"""Fused CPU kernels for the Freeze-SGD reset (numba).

One pass over a parameter: read ``w`` and the int8 template, give the entries with ``w * t < 0``
their new value.  posRand draws come from a counter-based generator (a hash of the entry's index
and a per-step seed), so they do not depend on how the work is split.  These kernels
cost about as much as one copy of the parameter; a dense ``torch.where`` with ``rand_like`` costs
tens of copies on a CPU.  Other devices and dtypes use the torch path in ``freeze.py``.
"""
from __future__ import annotations

import os

import numpy as np

try:  # pragma: no cover - exercised implicitly
    from numba import njit

    AVAILABLE = os.environ.get("POLARITY_NO_NUMBA", "") == ""
except ImportError:  # pragma: no cover
    AVAILABLE = False

POSCON, POSRAND, ZERO, FLIP = 0, 1, 2, 3

if AVAILABLE:

    @njit(inline="always")
    def _uniform(seed, i):
        # murmur3's 32-bit finaliser of (i * golden + seed): 32-bit integer ops, so the loop
        # vectorises; the top 24 bits give a uniform draw on (0, 1].
        # (numba widens uint32 arithmetic to 64 bits: every step is cast back explicitly)
        x = np.uint32(np.uint32(i) * np.uint32(0x9E3779B1) + seed)
        x = np.uint32(x ^ (x >> np.uint32(16)))
        x = np.uint32(x * np.uint32(0x85EBCA6B))
        x = np.uint32(x ^ (x >> np.uint32(13)))
        x = np.uint32(x * np.uint32(0xC2B2AE35))
        x = np.uint32(x ^ (x >> np.uint32(16)))
        return np.float32(np.uint32(x >> np.uint32(8)) + np.uint32(1)) * np.float32(1.0 / 16777216.0)

    # One branch-free loop per method (so each vectorises): every entry is read and written,
    # violations get their new value through a select.  Faster here than testing blocks and
    # fixing only the few that hold a violation: with 1% violations most blocks of useful size
    # hold one.  Entries with w * t >= 0 (compliant, zero, or free: t == 0) keep their value.

    @njit(cache=True, nogil=True)
    def _poscon(w, t, eps):
        k = 0
        for i in range(w.size):
            wi = w[i]
            tf = w.dtype.type(t[i])
            v = wi * tf < 0
            w[i] = tf * eps if v else wi
            k += v
        return k

    @njit(cache=True, nogil=True)
    def _posrand(w, t, eps, seed):
        k = 0
        s = np.uint32(seed & 0xFFFFFFFF)
        for i in range(w.size):
            wi = w[i]
            tf = w.dtype.type(t[i])
            v = wi * tf < 0
            w[i] = tf * eps * _uniform(s, i) if v else wi
            k += v
        return k

    @njit(cache=True, nogil=True)
    def _zero(w, t):
        k = 0
        for i in range(w.size):
            wi = w[i]
            v = wi * w.dtype.type(t[i]) < 0
            w[i] = 0.0 if v else wi
            k += v
        return k

    @njit(cache=True, nogil=True)
    def _flip(w, t):
        k = 0
        for i in range(w.size):
            wi = w[i]
            v = wi * w.dtype.type(t[i]) < 0
            w[i] = -wi if v else wi
            k += v
        return k


def reset_numpy(w: np.ndarray, t: np.ndarray, method: int, eps: float, seed: int) -> int:
    """In-place reset of a flat float32/float64 array against a flat int8 template.

    One thread: splitting large arrays over numba's OpenMP workers or over Python threads (the
    kernels release the GIL) was 2-4x *slower* on the 2-core machine this was tuned on, where
    torch's own OpenMP workers keep spinning after the optimizer step."""
    e = w.dtype.type(eps)
    if method == POSCON:
        return int(_poscon(w, t, e))
    if method == POSRAND:
        return int(_posrand(w, t, e, seed))
    if method == ZERO:
        return int(_zero(w, t))
    return int(_flip(w, t))
