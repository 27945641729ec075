"""Per-trial measures shared by every experiment (SPEC §6).

* error at convergence: validation error (1 - accuracy) at the epoch of minimum validation loss
  (the first such epoch on ties);
* epochs to cut-off: the first (1-based) epoch whose validation accuracy reaches the cut-off,
  NaN when never reached;
* success rate: the fraction of trials that reach the cut-off.

Arrays are (..., epochs); frames are the tidy per-epoch export.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

KEYS = ["condition", "n", "width", "trial"]


def error_at_min_loss(val_loss: np.ndarray, val_acc: np.ndarray) -> np.ndarray:
    val_loss = np.asarray(val_loss, dtype=float)
    val_acc = np.asarray(val_acc, dtype=float)
    loss = np.where(np.isnan(val_loss), np.inf, val_loss)
    idx = np.argmin(loss, axis=-1)
    return 1.0 - np.take_along_axis(val_acc, idx[..., None], axis=-1)[..., 0]


def epochs_to_cutoff(val_acc: np.ndarray, cutoff: float) -> np.ndarray:
    val_acc = np.asarray(val_acc, dtype=float)
    hit = val_acc >= cutoff
    first = np.argmax(hit, axis=-1).astype(float) + 1.0
    return np.where(hit.any(axis=-1), first, np.nan)


def success_rate(epochs_to: np.ndarray) -> float:
    e = np.asarray(epochs_to, dtype=float)
    return float(np.mean(~np.isnan(e))) if e.size else float("nan")


def per_trial(epochs, cutoffs: Sequence[float] = (0.9,), keys: Sequence[str] = KEYS):
    """Tidy per-epoch frame -> one row per trial with ``error`` (at min val loss),
    ``final_val_acc`` and ``epochs_to_<cutoff>`` for each cut-off."""
    import pandas as pd

    rows = []
    for key, g in epochs.sort_values("epoch").groupby(list(keys), sort=True):
        row = dict(zip(keys, key))
        vl, va = g["val_loss"].to_numpy(), g["val_acc"].to_numpy()
        row["epochs"] = len(g)
        row["error"] = float(error_at_min_loss(vl, va))
        row["final_val_acc"] = float(va[-1])
        for c in cutoffs:
            row[cutoff_column(c)] = float(epochs_to_cutoff(va, c))
        rows.append(row)
    return pd.DataFrame(rows)


def cutoff_column(c: float) -> str:
    return f"epochs_to_{c:g}"


def summarize(trials, cutoffs: Sequence[float] = (0.9,), by: Iterable[str] = ("condition", "n", "width")):
    """Per group: median and 25-75% of the error, median epochs to each cut-off (over the
    trials that reach it) and the success rate."""
    import pandas as pd

    out = []
    for key, g in trials.groupby(list(by), sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["trials"] = len(g)
        e = g["error"].to_numpy()
        row["error_median"], row["error_q25"], row["error_q75"] = (
            float(np.median(e)), float(np.quantile(e, 0.25)), float(np.quantile(e, 0.75)))
        for c in cutoffs:
            col = cutoff_column(c)
            v = g[col].to_numpy()
            row[f"{col}_median"] = float(np.nanmedian(v)) if np.any(~np.isnan(v)) else float("nan")
            row[f"success_{c:g}"] = success_rate(v)
        out.append(row)
    return pd.DataFrame(out)
