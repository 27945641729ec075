"""Is one sign template representable?  Normalise the template, then decide.

`representable` reads a template (weight signs, output signs, bias modes; 0 = unconstrained),
keeps the two relevant input columns (noise-input signs are irrelevant, docs/theory.md "Noise
inputs") and dispatches: the goodness-flow decision on the corners (`corners`), its LP
cross-check (`lp`), or the XOR-5D squares (`squares`).
"""
from __future__ import annotations

import numpy as np

from .corners import _OUT_BIAS, _cones, _corner, _decide_groups
from .lp import _lp_representable
from .squares import squares_representable

__all__ = ["representable"]


def _as_sign_array(name: str, x, shape=None, allow_zero: bool = True) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric signs (+1/-1{'/0' if allow_zero else ''}), got dtype {a.dtype}")
    s = np.sign(a).astype(np.int64)
    if shape is not None and s.shape != shape:
        raise ValueError(f"{name} has shape {s.shape}, expected {shape}")
    if not allow_zero and (s == 0).any():
        raise ValueError(f"{name} contains 0 (unconstrained) entries, which this check does not allow")
    return s


def _normalise(w1_signs, out_signs, hidden_bias, output_bias, relevant):
    w1 = _as_sign_array("w1_signs", w1_signs)
    if w1.ndim != 2:
        raise ValueError(f"w1_signs must be a [H, d] matrix of signs, got shape {w1.shape}")
    h, d = w1.shape
    r0, r1 = relevant
    if not (0 <= r0 < d and 0 <= r1 < d and r0 != r1):
        raise ValueError(f"relevant={relevant} must name two different input columns of w1_signs (d={d})")
    out = _as_sign_array("out_signs", np.reshape(np.asarray(out_signs), -1) if not hasattr(out_signs, "detach")
                         else out_signs.reshape(-1), (h,))
    if isinstance(hidden_bias, str):
        if hidden_bias not in ("none", "free"):
            raise ValueError(f"hidden_bias must be 'none', 'free' or an array of {h} signs, got {hidden_bias!r}")
        hb = np.full(h, 1 if hidden_bias == "free" else -1, dtype=np.int64)  # beta>=0 == free; beta<=0 == none
        hb_raw = hidden_bias
    else:
        hb_raw = _as_sign_array("hidden_bias", hidden_bias, (h,))
        hb = np.where(hb_raw == 0, 1, hb_raw)  # 0 = unconstrained = free
    if isinstance(output_bias, str):
        if output_bias not in _OUT_BIAS:
            raise ValueError(f"output_bias must be 'none', 'free', '+', '-' or a sign, got {output_bias!r}")
        ob = output_bias
    else:
        v = float(np.asarray(output_bias).reshape(-1)[0]) if np.size(output_bias) == 1 else None
        if v is None:
            raise ValueError(f"output_bias must be a single sign, got {output_bias!r}")
        ob = "free" if v == 0 else ("+" if v > 0 else "-")
    return w1[:, [r0, r1]], out, hb, hb_raw, ob


def _unit_kinds(rel: np.ndarray, out: np.ndarray, hb: np.ndarray):
    """Group units by (s1, s2, sv, hidden-bias class); zeros (unconstrained) expand to unions."""
    kinds: dict[tuple, int] = {}
    for (s1, s2), sv, b in zip(rel.tolist(), out.tolist(), hb.tolist()):
        key = (s1, s2, sv, b > 0)
        kinds[key] = kinds.get(key, 0) + 1
    groups = []
    for (s1, s2, sv, free), count in sorted(kinds.items()):
        cones = []
        for t1 in ((1, -1) if s1 == 0 else (s1,)):
            for t2 in ((1, -1) if s2 == 0 else (s2,)):
                for tv in ((1, -1) if sv == 0 else (sv,)):
                    for c in _cones(_corner(t1, t2), tv, free):
                        if c not in cones:
                            cones.append(c)
        groups.append((tuple(cones), count))
    return groups


def representable(w1_signs, out_signs, hidden_bias="free", output_bias="free", *,
                  relevant: tuple[int, int] = (0, 1), support: str = "corners",
                  method: str = "fast") -> bool:
    """Can magnitudes be chosen so that the network classifies the XOR support correctly?

    ``w1_signs``: [H, d] signs of the first-layer weights (0 = unconstrained); ``out_signs``: [H]
    output signs; ``hidden_bias``: ``"none"`` | ``"free"`` | [H] signs; ``output_bias``: ``"none"`` |
    ``"free"`` | ``"+"`` | ``"-"`` | a sign.  ``relevant``: the two XOR coordinates (the others are
    noise and irrelevant, see docs/theory.md).  ``support``: ``"corners"`` or ``"squares"``
    (XOR-5D quadrant squares).  ``method``: ``"fast"`` (the combinatorial decision) or ``"lp"``
    (activation-pattern enumeration + linear programs; corners only, exponential in H)."""
    rel, out, hb, hb_raw, ob = _normalise(w1_signs, out_signs, hidden_bias, output_bias, relevant)
    if support == "squares":
        return squares_representable(rel, out, hb, ob, method=method)
    if support != "corners":
        raise ValueError(f"support must be 'corners' or 'squares', got {support!r}")
    if method == "fast":
        return _decide_groups(_unit_kinds(rel, out, hb), _OUT_BIAS[ob])
    if method == "lp":
        return _lp_representable(rel, out, hb_raw if not isinstance(hb_raw, str) else hb_raw, ob)
    raise ValueError(f"method must be 'fast' or 'lp', got {method!r}")
