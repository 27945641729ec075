"""The four Freeze-SGD reset methods (SPEC §3), named and validated in this one place.

A violating entry (``w * t < 0``, template sign ``t``) becomes, with ``ε`` (default 1e-3):

* ``posCon``:  t·ε
* ``posRand``: t·ε·u, u uniform on (0, 1] from the counter-based stream (``stream.py``)
* ``zero``:    0
* ``flip``:    −w

Exact zeros and free entries (``t == 0``) never violate.  ``numba_reset.py`` and
``torch_reset.py`` are the two backends of this rule.
"""
from __future__ import annotations

import math

import torch

RESET_METHODS = ("posCon", "posRand", "zero", "flip")
POSCON, POSRAND, ZERO, FLIP = range(4)
CODES = dict(zip(RESET_METHODS, (POSCON, POSRAND, ZERO, FLIP)))
DEFAULT_EPS = 1e-3


class ResetError(ValueError):
    """An unknown reset method or an unusable ε."""


def check_method(method: str) -> int:
    """The kernel code of ``method``; a :class:`ResetError` naming the choices otherwise."""
    try:
        return CODES[method]
    except (KeyError, TypeError):
        raise ResetError(f"unknown reset method {method!r}; choose one of "
                         f"{', '.join(RESET_METHODS)}") from None


def check_eps(eps: float, dtype: torch.dtype | None = None) -> float:
    """``eps`` as a float: positive and finite, and, for a parameter ``dtype``, representable
    there as a positive finite number (a reset value must stay strictly on the template's side)."""
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ResetError(f"eps must be a positive finite number, got {eps!r}") from None
    if not (eps > 0 and math.isfinite(eps)):
        raise ResetError(f"eps must be a positive finite number, got {eps!r}")
    if dtype is not None and dtype.is_floating_point:
        info = torch.finfo(dtype)
        if eps > info.max or eps < info.tiny:
            raise ResetError(f"eps={eps!r} is not a positive normal number in {dtype} "
                             f"(its range is [{info.tiny:.3g}, {info.max:.3g}]): reset values "
                             "would not keep the template's sign")
    return eps


__all__ = ["RESET_METHODS", "CODES", "POSCON", "POSRAND", "ZERO", "FLIP", "DEFAULT_EPS",
           "ResetError", "check_method", "check_eps"]
