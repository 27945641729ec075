"""Every seed the project derives from another, in one place.

A seed is a pure function of the key it belongs to (a trial, a network, a parameter at one
step), never of the order in which work is scheduled, so results do not depend on how jobs are
batched or spread over workers.

The per-step posRand seed has one rule, :func:`parameter_step_seed`: splitmix64's finaliser of
(stream seed, optimizer step, parameter index), written once for numpy (``mix32_np``, the host:
the ``Freezer``, the XOR-5D torch path) and once for numba (``mix32``, inside the XOR-5D
kernels), tested equal.  A ``Freezer`` seeded with an XOR-5D network's seed therefore draws what
the batched trainer draws for that network (parameter 0 = fc1.weight, 1 = fc2.weight).
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ._numba import NUMBA

_MASK63 = 0x7FFF_FFFF_FFFF_FFFF
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF
_M32 = 0xFFFF_FFFF
# splitmix64's constants: the golden-ratio increment, a second odd multiplier, the finaliser's two
_SM_A, _SM_B = 0x9E3779B97F4A7C15, 0xD6E8FEB86659FD93
_SM_C, _SM_D = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def trial_seed(base_seed: int, trial: int) -> int:
    """The seed shared by every condition of one trial (same init, data order, validation)."""
    h = hashlib.sha256(f"polarity/{base_seed}/{trial}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFF_FFFF


def stream_seed(*parts: Any) -> int:
    """A 63-bit seed of a tuple of ints and strings (e.g. a stream's name and its key)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & _MASK63


def mix32_np(seed, a, b) -> np.ndarray:
    """A 32-bit hash of three integers (their low 64 bits), vectorised in numpy:
    ``x = seed ^ a*A ^ b*B`` (mod 2**64), splitmix64's finaliser, the low 32 bits (int64)."""
    u = np.uint64
    with np.errstate(over="ignore"):
        x = (np.asarray(seed).astype(u) ^ (np.asarray(a).astype(u) * u(_SM_A))
             ^ (np.asarray(b).astype(u) * u(_SM_B)))
        x = (x ^ (x >> u(31))) * u(_SM_C)
        x = (x ^ (x >> u(27))) * u(_SM_D)
        x = x ^ (x >> u(31))
    return (x & u(_M32)).astype(np.int64)


def _low64(v):
    """Python ints (any size, negative too) as their low 64 bits; arrays as they are."""
    return v & _MASK64 if isinstance(v, int) else v


def parameter_step_seed(seed, step, index):
    """The posRand seed of parameter ``index`` at optimizer step ``step`` (1 after the first
    step) of the stream ``seed``: ``mix32(seed, step, index)``, in [0, 2**32).  A ``Freezer``
    passes its seed and the parameter's position; the XOR-5D trainer a network's seed
    (``network_reset_seed``) and the layer (0: fc1.weight, 1: fc2.weight).  Ints give an int,
    arrays (broadcast) an int64 array."""
    out = mix32_np(_low64(seed), _low64(step), _low64(index))
    return int(out) if out.ndim == 0 else out


def network_reset_seed(seed: int, trial: int, n: int, condition: str, width: int) -> int:
    """The posRand seed of one XOR-5D network: a function of its own key only, never of its job."""
    return stream_seed("xor5d/posRand", int(seed), int(trial), int(n), str(condition),
                       int(width)) & 0xFFFFFFFF


if NUMBA:
    from numba import njit

    @njit(cache=True)
    def mix32(seed, a, b):
        """``parameter_step_seed`` for scalars inside numba kernels (``mix32_np``'s arithmetic)."""
        x = (np.uint64(seed) ^ (np.uint64(a) * np.uint64(_SM_A)) ^ (np.uint64(b) * np.uint64(_SM_B)))
        x = (x ^ (x >> np.uint64(31))) * np.uint64(_SM_C)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(_SM_D)
        x = x ^ (x >> np.uint64(31))
        return np.int64(x & np.uint64(_M32))


__all__ = ["trial_seed", "stream_seed", "mix32_np", "parameter_step_seed", "network_reset_seed"] + (
    ["mix32"] if NUMBA else [])
