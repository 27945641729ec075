"""The posRand stream: counter-based uniform draws, one definition with a numba and a torch backend.

A draw is a pure function of a 32-bit seed and the entry's index::

    x = (index * 0x9E3779B1 + seed) mod 2**32           # golden-ratio step
    x = murmur3_fmix32(x)                               # xor-shift / multiply avalanche
    u = ((x >> 8) + 1) / 2**24                          # top 24 bits, uniform on (0, 1]

so draws do not depend on how the work is split over threads, on the device, or on the order in
which parameters are visited.  The seed of one parameter at one step is
``seeds.parameter_step_seed`` for a ``Freezer`` and ``mix32(network_seed, step, layer)`` inside
the XOR-5D kernels.  ``uniform`` (numba, written in LLVM IR on 32-bit lanes so that it
vectorises; docs/kernels.md) and ``uniform_torch`` (torch integer ops, any device) give the same
floats bit for bit, as do ``mix32`` and ``mix32_np`` (tests/test_freeze.py).
"""
from __future__ import annotations

import numpy as np
import torch

from .._numba import NUMBA

GOLDEN, FMIX1, FMIX2 = 0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35
_M32 = 0xFFFFFFFF
# splitmix64's constants, for mix32
_SM_A, _SM_B = 0x9E3779B97F4A7C15, 0xD6E8FEB86659FD93
_SM_C, _SM_D = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def uniform_torch(seed, index: torch.Tensor) -> torch.Tensor:
    """Draws on (0, 1] as float32, in torch integer ops on ``index``'s device.  ``index``: an
    int64 tensor; ``seed``: an int in [0, 2**32) or an int64 tensor broadcastable to it."""
    x = ((index & _M32) * GOLDEN + seed) & _M32
    x = x ^ (x >> 16)
    x = (x * FMIX1) & _M32   # the int64 product may wrap; its low 32 bits are exact
    x = x ^ (x >> 13)
    x = (x * FMIX2) & _M32
    x = x ^ (x >> 16)
    return ((x >> 8) + 1).to(torch.float32) * (1.0 / 16777216.0)


def mix32_np(seed, a, b) -> np.ndarray:
    """A 32-bit hash of three integers (splitmix64's finaliser), vectorised in numpy."""
    u = np.uint64
    with np.errstate(over="ignore"):
        x = (np.asarray(seed).astype(u) ^ (np.asarray(a).astype(u) * u(_SM_A))
             ^ (np.asarray(b).astype(u) * u(_SM_B)))
        x = (x ^ (x >> u(31))) * u(_SM_C)
        x = (x ^ (x >> u(27))) * u(_SM_D)
        x = x ^ (x >> u(31))
    return (x & u(_M32)).astype(np.int64)


if NUMBA:
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic

    @intrinsic
    def uniform(typingctx, seed, index):
        """The draw of (seed, index) as float32, in LLVM IR on 32-bit lanes (numba would widen
        the arithmetic to 64 bits and halve the vector width).  Both arguments are truncated to
        32 bits."""
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
            x = builder.add(builder.mul(x, c(GOLDEN)), s)
            x = builder.xor(x, builder.lshr(x, c(16)))
            x = builder.mul(x, c(FMIX1))
            x = builder.xor(x, builder.lshr(x, c(13)))
            x = builder.mul(x, c(FMIX2))
            x = builder.xor(x, builder.lshr(x, c(16)))
            x = builder.add(builder.lshr(x, c(8)), c(1))            # 1 .. 2**24
            f = builder.sitofp(x, ir.FloatType())
            return builder.fmul(f, ir.Constant(ir.FloatType(), 1.0 / 16777216.0))

        return types.float32(seed, index), codegen

    @njit(cache=True)
    def mix32(seed, a, b):
        """``mix32_np`` for scalars inside kernels: the seed of (network seed, step, layer)."""
        x = (np.uint64(seed) ^ (np.uint64(a) * np.uint64(_SM_A)) ^ (np.uint64(b) * np.uint64(_SM_B)))
        x = (x ^ (x >> np.uint64(31))) * np.uint64(_SM_C)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(_SM_D)
        x = x ^ (x >> np.uint64(31))
        return np.int64(x & np.uint64(_M32))


__all__ = ["uniform_torch", "mix32_np", "uniform", "mix32"]
