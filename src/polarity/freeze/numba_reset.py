"""The Freeze-SGD reset as a fused numba loop: the CPU backend for float32/float64 parameters.

One pass over a parameter reads ``w`` and its int8 template and gives the entries with
``w * t < 0`` their new value (``reset_value``: the rule of ``methods.py``).  Large parameters are
split into contiguous chunks over numba's threads; posRand draws come from the counter-based
stream (``stream.py``), so the result does not depend on the split.  Why the loop is written the
way it is (32-bit hash lanes, an int32 count, a slice indexed from 0, a select as the store):
docs/kernels.md.
"""
from __future__ import annotations

import threading

import numpy as np

from .._numba import NUMBA
from .methods import POSCON, POSRAND, ZERO  # noqa: F401  (constants the kernels inline; flip is the fall-through)

PARALLEL_MIN = 1 << 18     # entries; smaller parameters are reset on the calling thread
_CHUNK_MAX = 1 << 30       # the per-chunk count is an int32
# numba's fallback "workqueue" threading layer aborts the process when two Python threads enter
# parallel code at once: one parallel reset at a time, a concurrent caller runs serially
_PARALLEL_LOCK = threading.Lock()

if NUMBA:
    import numba
    from numba import njit, prange

    from .stream import uniform

    @njit(inline="always")
    def reset_value(method, wi, tf, eps, zero, seed, index):
        """The value a violating entry ``wi`` (template sign ``tf``, in w's dtype) is reset to;
        posRand draws from (seed, index)."""
        if method == POSCON:
            return tf * eps
        if method == POSRAND:
            return tf * eps * uniform(seed, index)
        if method == ZERO:
            return zero
        return -wi

    @njit(cache=True, nogil=True)
    def reset_range(w, t, method, eps, seed, lo, hi):
        """Reset ``w[lo:hi]`` against ``t[lo:hi]``; returns the number of entries reset.
        posRand draws from (seed, index in ``w``).  ``method`` is loop-invariant, so LLVM
        specialises the loop for it."""
        a = w[lo:hi]
        b = t[lo:hi]
        zero = a.dtype.type(0)
        s = np.uint32(seed & 0xFFFFFFFF)
        k = np.int32(0)
        for i in range(a.size):
            wi = a[i]
            tf = a.dtype.type(b[i])
            v = wi * tf < 0   # compliant, zero and free (t == 0) entries keep their value
            a[i] = reset_value(method, wi, tf, eps, zero, s, lo + i) if v else wi
            k = np.int32(k + v)
        return k

    @njit(cache=True, nogil=True, parallel=True)
    def reset_chunks(w, t, method, eps, seed, nchunks):
        n = w.size
        counts = np.zeros(nchunks, np.int64)
        for c in prange(nchunks):
            counts[c] = reset_range(w, t, method, eps, seed, n * c // nchunks, n * (c + 1) // nchunks)
        return counts.sum()


def reset_numpy(w: np.ndarray, t: np.ndarray, method: int, eps: float, seed: int,
                threads: int = 1) -> int:
    """In-place reset of a flat float32/float64 array against a flat int8 template, on up to
    ``threads`` numba threads.  The result does not depend on ``threads``."""
    e = w.dtype.type(eps)
    n = w.size
    chunks = -(-n // _CHUNK_MAX)
    threads = min(max(1, int(threads)), numba.config.NUMBA_NUM_THREADS)
    if threads > 1 and n >= PARALLEL_MIN and _PARALLEL_LOCK.acquire(blocking=False):
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            return int(reset_chunks(w, t, method, e, seed, max(threads, chunks)))
        finally:
            numba.set_num_threads(previous)
            _PARALLEL_LOCK.release()
    return sum(int(reset_range(w, t, method, e, seed, n * c // chunks, n * (c + 1) // chunks))
               for c in range(chunks))


__all__ = ["PARALLEL_MIN", "reset_numpy"] + (["reset_value", "reset_range", "reset_chunks"] if NUMBA else [])
