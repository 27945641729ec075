"""Freeze-SGD, in one home (SPEC §3).

* ``methods.py``      the four reset methods, named and validated once
* ``stream.py``       the counter-based posRand stream (numba and torch backends side by side)
* ``numba_reset.py``  the fused CPU reset loop (float32/float64)
* ``torch_reset.py``  the same reset in torch ops (any device or dtype)
* ``freezer.py``      ``Freezer`` (an optimizer step post-hook), ``reset_``, ``impose``,
                      ``innermost`` (a trainer's optimizer wrapper unwrapped)
* ``switch.py``       ``switch_fraction``: sign switches between two states
"""
from .freezer import Freezer, impose, innermost, reset_
from .methods import CODES, DEFAULT_EPS, RESET_METHODS, ResetError, check_eps, check_method
from .switch import switch_fraction
from .torch_reset import reset_torch_

__all__ = ["Freezer", "impose", "innermost", "reset_", "reset_torch_", "switch_fraction", "RESET_METHODS",
           "CODES", "DEFAULT_EPS", "ResetError", "check_eps", "check_method"]
