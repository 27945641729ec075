"""Fused CPU kernels for the Freeze-SGD reset (numba).

One pass over a parameter: read ``w`` and the int8 template, rewrite only the entries with
``w * t < 0``.  posRand draws come from a counter-based generator (SplitMix64 of
``seed ^ index``), so the values are the same whatever the number of threads.  These kernels
cost about as much as one copy of the parameter; a dense ``torch.where`` with ``rand_like`` costs
tens of copies on a CPU.  Other devices and dtypes use the torch path in ``freeze.py``.
"""
from __future__ import annotations

import os

import numpy as np

try:  # pragma: no cover - exercised implicitly
    import numba
    from numba import njit, prange

    AVAILABLE = os.environ.get("POLARITY_NO_NUMBA", "") == ""
except ImportError:  # pragma: no cover
    AVAILABLE = False

POSCON, POSRAND, ZERO, FLIP = 0, 1, 2, 3
PARALLEL_MIN = 1 << 18  # below this many entries a serial loop beats thread start-up

if AVAILABLE:

    @njit(inline="always")
    def _uniform(seed, i):
        # SplitMix64 finaliser of (seed + i * golden); top 24 bits -> (0, 1]
        z = np.uint64(seed) + np.uint64(i + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        return (np.float64(z >> np.uint64(40)) + 1.0) * (1.0 / 16777216.0)

    @njit(inline="always")
    def _fix(w, t, lo, hi, method, eps, seed):
        k = 0
        for i in range(lo, hi):
            wi = w[i]
            ti = t[i]
            if wi * np.float32(ti) < 0:
                if method == 0:
                    w[i] = ti * eps
                elif method == 1:
                    w[i] = ti * eps * _uniform(seed, i)
                elif method == 2:
                    w[i] = 0.0
                else:
                    w[i] = -wi
                k += 1
        return k

    @njit(inline="always")
    def _reset_range(w, t, lo, hi, method, eps, seed):
        # Blocks of 32: a branch-free (vectorised) test of the block, then a scalar fix of the
        # few blocks that hold a violation.  Memory-bound: about the cost of one copy.
        k = 0
        nb = (hi - lo) // 32
        for b in range(nb):
            s = lo + b * 32
            acc = 0
            for j in range(32):
                acc += w[s + j] * np.float32(t[s + j]) < 0
            if acc:
                k += _fix(w, t, s, s + 32, method, eps, seed)
        return k + _fix(w, t, lo + nb * 32, hi, method, eps, seed)

    @njit(cache=True, nogil=True)
    def reset_serial(w, t, method, eps, seed):
        return _reset_range(w, t, 0, w.size, method, eps, seed)

    @njit(cache=True, nogil=True, parallel=True)
    def reset_parallel(w, t, method, eps, seed, nchunks):
        n = w.size
        chunk = (n + nchunks - 1) // nchunks
        counts = np.zeros(nchunks, dtype=np.int64)
        for c in prange(nchunks):
            lo = c * chunk
            hi = min(n, lo + chunk)
            counts[c] = _reset_range(w, t, lo, hi, method, eps, seed)
        return counts.sum()


# Threads for the fused reset.  One thread is already memory-bound (about one copy), and OpenMP
# threads slow down many-fold when another process holds the cores, so the default is 1;
# POLARITY_RESET_THREADS=N opts in to N threads on large parameters.
THREADS = int(os.environ.get("POLARITY_RESET_THREADS", "1"))


def reset_numpy(w: np.ndarray, t: np.ndarray, method: int, eps: float, seed: int,
                threads: int = THREADS) -> int:
    """In-place reset of a flat float32/float64 array against a flat int8 template."""
    if threads > 1 and w.size >= PARALLEL_MIN:
        threads = min(threads, numba.config.NUMBA_NUM_THREADS)
        if numba.get_num_threads() != threads:
            numba.set_num_threads(threads)
        return int(reset_parallel(w, t, method, eps, seed, threads * 4))
    return int(reset_serial(w, t, method, eps, seed))
