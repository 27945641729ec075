"""Cells and captions of the comparison tables, one format for every report (images, dose-response,
the README's tables): a paired difference as ``+3 [-1, +8] (reached 12/12 vs 6/12)``, numbers with
their infinities spelled out, and the caption sentence of a table's Holm family
(``stats.family_caption``, re-exported here)."""
from __future__ import annotations

import math
from typing import Any, Mapping

from .stats import family_caption

__all__ = ["fmt", "paired_cell", "reached_note", "family_caption"]


def fmt(v: Any, digits: int = 3, signed: bool = False) -> str:
    """A number for a table: ``digits`` significant digits (a sign when ``signed``), ``inf`` /
    ``-inf`` spelled out, ``n/a`` for NaN or None."""
    if v is None:
        return "n/a"
    v = float(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return ("+inf" if signed else "inf") if v > 0 else "-inf"
    return format(v, f"{'+' if signed else ''}.{digits}g")


def reached_note(reached: int, reference_reached: int, pairs: int) -> str:
    """``reached 12/12 vs 6/12``: how many pairs each side reached the cut-off in (condition
    first, then the reference)."""
    return f"reached {int(reached)}/{int(pairs)} vs {int(reference_reached)}/{int(pairs)}"


def paired_cell(row: Mapping[str, Any], digits: int = 3, counts: bool | None = None) -> str:
    """One row of ``stats.paired_to_reference`` as ``median [ci_low, ci_high]``, signed, with
    ``(reached k/n vs k'/n)`` after it when ``counts`` is True, or (None) when either side has a
    pair that never reached the cut-off -- a median of +inf or 0 then says nothing without it.
    When neither side reached it in any pair the cell is ``n/a`` with the counts."""
    n = int(row["n_pairs"])
    reached, ref = row.get("reached", n), row.get("reference_reached", n)
    if n and int(reached) == 0 and int(ref) == 0:  # no pair on either side: no difference to show
        return f"n/a ({reached_note(reached, ref, n)})"
    cell = (f"{fmt(row['median_diff'], digits, True)} [{fmt(row['ci_low'], digits, True)}, "
            f"{fmt(row['ci_high'], digits, True)}]")
    if counts is None:
        counts = min(int(reached), int(ref)) < n
    return f"{cell} ({reached_note(reached, ref, n)})" if counts else cell
