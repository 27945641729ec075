"""The posRand stream: counter-based uniform draws, one definition with a numba and a torch backend.

A draw is a pure function of a 32-bit seed and the entry's index::

    x = (index * 0x9E3779B1 + seed) mod 2**32           # golden-ratio step
    x = murmur3_fmix32(x)                               # xor-shift / multiply avalanche
    u = ((x >> 8) + 1) / 2**24                          # top 24 bits, uniform on (0, 1]

so draws do not depend on how the work is split over threads, on the device, or on the order in
which parameters are visited.  The seed of one parameter at one step has one rule,
``seeds.parameter_step_seed`` (``mix32`` inside kernels), for a ``Freezer`` and for the XOR-5D
trainer alike.  ``uniform`` (numba, written in LLVM IR on 32-bit lanes so that it vectorises;
docs/kernels.md) and ``uniform_torch`` (torch integer ops, any device) give the same floats bit for
bit (tests/test_freeze.py).
"""
from __future__ import annotations

import torch

from .._numba import NUMBA
# the per-step seed of a stream: its rule and both backends live in seeds.py (named here too)
from ..seeds import mix32_np  # noqa: F401

GOLDEN, FMIX1, FMIX2 = 0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35
_M32 = 0xFFFFFFFF


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


if NUMBA:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    from ..seeds import mix32  # noqa: F401

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


__all__ = ["uniform_torch", "uniform"]
