"""Fused CPU kernels for the Freeze-SGD reset (numba).

One pass over a parameter: read ``w`` and the int8 template, give the entries with ``w * t < 0``
their new value.  posRand draws come from a counter-based generator (a hash of the entry's index
and a per-step seed), so they do not depend on how the work is split over threads.  Large
parameters are split over numba's worker threads (as many as torch uses); on the 2-core machine
this was tuned on, the reset of an AlexNet-sized parameter set costs about one copy of it, where
a dense ``torch.where`` with ``rand_like`` costs tens of copies.  Other devices and dtypes use
the torch path in ``freeze.py``.

What makes the loop fast (each measured, see ``benchmarks/freezer.py``):

* the hash is written in LLVM IR with 32-bit lanes: numba widens integer arithmetic to 64 bits,
  and 64-bit vector multiplies made posRand twice as slow as the other methods;
* the count of resets is an int32 accumulator (an int64 one halves the vector width);
* the loop indexes a slice from 0 (a ``range(lo, hi)`` index can be negative to numba, which
  then adds wrap-around checks that stop vectorisation);
* the store is a select, which LLVM turns into a masked store: clean cache lines stay clean.

``polarity.experiments.xor5d``'s cached kernels inline functions from this file, and numba's
on-disk cache does not track that dependency: after editing this file, delete the
``__pycache__/xor5d.*.nb[ic]`` files (or touch ``xor5d.py``).
"""
from __future__ import annotations

import os
import threading

import numpy as np

try:  # pragma: no cover - exercised implicitly
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.extending import intrinsic

    NUMBA = True
except ImportError:  # pragma: no cover
    NUMBA = False
# POLARITY_NO_NUMBA=1 sends the freezer down the torch path (the intrinsics stay available)
AVAILABLE = NUMBA and os.environ.get("POLARITY_NO_NUMBA", "") == ""

POSCON, POSRAND, ZERO, FLIP = 0, 1, 2, 3
PARALLEL_MIN = 1 << 18     # entries; smaller parameters are reset on the calling thread
_CHUNK_MAX = 1 << 30       # the per-chunk count is an int32
# numba's fallback "workqueue" threading layer aborts the process when two Python threads enter
# parallel code at once: one parallel reset at a time, a concurrent caller runs serially
_PARALLEL_LOCK = threading.Lock()

if NUMBA:

    @intrinsic
    def f32_from_bits(typingctx, bits):
        """The float32 whose IEEE bits are the low 32 bits of the integer ``bits`` (numba has no
        scalar bit cast); e.g. ``f32_from_bits((k + 127) << 23)`` is 2**k, branch-free."""
        if not isinstance(bits, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            v, i32 = args[0], ir.IntType(32)
            if v.type.width > 32:
                v = builder.trunc(v, i32)
            elif v.type.width < 32:
                v = builder.sext(v, i32)
            return builder.bitcast(v, ir.FloatType())

        return types.float32(bits), codegen

    @intrinsic
    def _uniform(typingctx, seed, index):
        """Uniform draw on (0, 1] from (seed, index): murmur3's 32-bit finaliser of
        ``index * golden + seed``, top 24 bits.  Both arguments are truncated to 32 bits."""
        if not (isinstance(seed, types.Integer) and isinstance(index, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)

            def as32(v):
                w = v.type.width
                return builder.trunc(v, i32) if w > 32 else builder.zext(v, i32) if w < 32 else v

            def c(v):
                return ir.Constant(i32, v)

            s, x = as32(args[0]), as32(args[1])
            x = builder.add(builder.mul(x, c(0x9E3779B1)), s)
            x = builder.xor(x, builder.lshr(x, c(16)))
            x = builder.mul(x, c(0x85EBCA6B))
            x = builder.xor(x, builder.lshr(x, c(13)))
            x = builder.mul(x, c(0xC2B2AE35))
            x = builder.xor(x, builder.lshr(x, c(16)))
            x = builder.add(builder.lshr(x, c(8)), c(1))            # 1 .. 2**24
            f = builder.sitofp(x, ir.FloatType())
            return builder.fmul(f, ir.Constant(ir.FloatType(), 1.0 / 16777216.0))

        return types.float32(seed, index), codegen

    @njit(inline="always")
    def reset_value(method, wi, tf, eps, zero, seed, index):
        """The value a violating entry ``wi`` (template sign ``tf``, in w's dtype) is reset to;
        posRand draws from (seed, index)."""
        if method == POSCON:
            return tf * eps
        if method == POSRAND:
            return tf * eps * _uniform(seed, index)
        if method == ZERO:
            return zero
        return -wi

    @njit(cache=True)
    def mix32(seed, a, b):
        """A 32-bit hash of three integers (splitmix64's finaliser): the posRand seed of one
        parameter at one step, so that a network's draws depend only on its own seed."""
        x = (np.uint64(seed) ^ (np.uint64(a) * np.uint64(0x9E3779B97F4A7C15))
             ^ (np.uint64(b) * np.uint64(0xD6E8FEB86659FD93)))
        x = (x ^ (x >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
        return np.int64(x & np.uint64(0xFFFFFFFF))

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


def mix32_np(seed, a, b) -> np.ndarray:
    """``mix32`` vectorised in numpy (uint64 arithmetic wraps as numba's does); no numba needed."""
    with np.errstate(over="ignore"):
        x = (np.asarray(seed).astype(np.uint64) ^ (np.asarray(a).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
             ^ (np.asarray(b).astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)))
        x = (x ^ (x >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x & np.uint64(0xFFFFFFFF)).astype(np.int64)


def uniform_torch(seed, index):
    """``_uniform`` in torch integer ops, on any device: the same draws, bit for bit.  ``seed``
    and ``index``: int64 tensors (broadcast), seed in [0, 2**32)."""
    import torch

    m = 0xFFFFFFFF
    x = ((index & m) * 0x9E3779B1 + seed) & m
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & m   # the int64 product may wrap; its low 32 bits are exact
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & m
    x = x ^ (x >> 16)
    return ((x >> 8) + 1).to(torch.float32) * (1.0 / 16777216.0)


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
