"""Every seed the project derives from another, in one place.

A seed is a pure function of the key it belongs to (a trial, a network, a parameter at one
step), never of the order in which work is scheduled, so results do not depend on how jobs are
batched or spread over workers.  Inside kernels, per-step seeds come from ``mix32`` of the
posRand stream (``polarity.freeze.stream``).
"""
from __future__ import annotations

import hashlib
from typing import Any

_MASK63 = 0x7FFF_FFFF_FFFF_FFFF


def trial_seed(base_seed: int, trial: int) -> int:
    """The seed shared by every condition of one trial (same init, data order, validation)."""
    h = hashlib.sha256(f"polarity/{base_seed}/{trial}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFF_FFFF


def stream_seed(*parts: Any) -> int:
    """A 63-bit seed of a tuple of ints and strings (e.g. a stream's name and its key)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & _MASK63


def parameter_step_seed(seed: int, step: int, index: int) -> int:
    """The posRand seed of parameter ``index`` at optimizer step ``step`` of a ``Freezer``."""
    h = hashlib.blake2b(repr((seed, step, index)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & _MASK63


def network_reset_seed(seed: int, trial: int, n: int, condition: str, width: int) -> int:
    """The posRand seed of one XOR-5D network: a function of its own key only, never of its job."""
    return stream_seed("xor5d/posRand", int(seed), int(trial), int(n), str(condition),
                       int(width)) & 0xFFFFFFFF


__all__ = ["trial_seed", "stream_seed", "parameter_step_seed", "network_reset_seed"]
