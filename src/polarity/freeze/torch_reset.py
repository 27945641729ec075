"""The Freeze-SGD reset in torch ops: any device, dtype and layout, no host sync.

The same values as the numba backend (``numba_reset.py``) for the same seed and index, bit for
bit in float32 and float64 (tests/test_freeze.py).  ``seed`` and ``index`` broadcast against
``w``, so one call can reset a batch of networks, each with its own stream.
"""
from __future__ import annotations

import torch

from .methods import check_method, POSCON, POSRAND, ZERO
from .stream import uniform_torch

_EXACT = (torch.float32, torch.float64)


def reset_torch_(w: torch.Tensor, t: torch.Tensor, method: str, eps: float, seed,
                 index: torch.Tensor | None = None, count: bool = True) -> torch.Tensor | None:
    """Reset, in place, the entries of ``w`` with ``w * t < 0``; returns how many (a 0-d tensor
    on ``w``'s device), or None with ``count=False`` (one reduction fewer).  posRand draws ``uniform_torch(seed, index)``; ``index`` defaults to the
    row-major position of each entry (what the numba backend uses for a contiguous ``w``)."""
    code = check_method(method)
    tf = t.to(w.dtype)
    viol = (w * tf) < 0
    if code == POSCON:
        new = tf * eps
    elif code == POSRAND:
        if index is None:
            index = torch.arange(w.numel(), device=w.device, dtype=torch.int64).view(w.shape)
        u = uniform_torch(seed, index)
        if w.dtype in _EXACT:
            new = tf * eps * u
        else:  # half precision: draw in float32, keep the result a nonzero normal number
            new = (tf.float() * eps * u).to(w.dtype)
            tiny = torch.finfo(w.dtype).tiny
            new = torch.where(new.abs() < tiny, tf * tiny, new)
    elif code == ZERO:
        new = torch.zeros((), dtype=w.dtype, device=w.device)
    else:
        new = -w
    w.copy_(torch.where(viol, new, w))
    return viol.sum() if count else None


__all__ = ["reset_torch_"]
