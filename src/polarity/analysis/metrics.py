"""Per-trial measures shared by every experiment (SPEC §6).

* error at convergence: validation error (1 - accuracy) at the epoch of minimum validation loss
  (the first such epoch on ties);
* epochs to cut-off: the first (1-based) epoch whose validation accuracy reaches the cut-off,
  NaN when never reached (when a protocol validates only at some epochs, the first *validated*
  epoch that reaches it);
* success rate: the fraction of trials that reach the cut-off;
* area under the validation-error curve (``error_auc``): the trapezoid integral of 1 - val_acc
  over the recorded evaluation points, divided by the span they cover -- the mean error along
  training, one number per trial that rewards learning early and low without a cut-off;
* a cut-off every arm reaches (``common_cutoff``): per sample size, a fraction of the *worst*
  condition's median best accuracy, so time-efficiency is compared below every arm's ceiling
  (a fixed cut-off above an arm's ceiling only counts its failures).

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
    ``final_val_acc`` and ``epochs_to_<cutoff>`` for each cut-off.  Vectorised over trials (a
    full fig4 run has 52,800 of them): the same numbers as applying :func:`error_at_min_loss`
    and :func:`epochs_to_cutoff` to each trial's epochs in order."""
    import pandas as pd

    keys = list(keys)
    cols = [cutoff_column(c) for c in cutoffs]
    df = epochs.dropna(subset=keys)  # as groupby does: rows with a missing key belong to no trial
    df = df.sort_values([*keys, "epoch"], kind="mergesort")
    if len(df) == 0:
        return pd.DataFrame(columns=[*keys, "epochs", "error", "final_val_acc", *cols])
    kv = df[keys]
    new = np.zeros(len(df), dtype=bool)
    new[0] = True
    for k in keys:
        v = kv[k].to_numpy()
        new[1:] |= v[1:] != v[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(df)))
    group = np.repeat(np.arange(len(starts)), counts)          # trial index of each row
    epoch = df["epoch"].to_numpy(dtype=float)                  # the epoch each row measured

    def first_where(mask):
        """(trials with a True row, index of their first True row)."""
        idx = np.flatnonzero(mask)
        g = group[idx]
        keep = np.ones(len(idx), dtype=bool)
        keep[1:] = g[1:] != g[:-1]
        return g[keep], idx[keep]

    va = df["val_acc"].to_numpy(dtype=float)
    loss = df["val_loss"].to_numpy(dtype=float)
    loss = np.where(np.isnan(loss), np.inf, loss)
    _, at_min = first_where(loss == np.minimum.reduceat(loss, starts)[group])
    out = kv.iloc[starts].reset_index(drop=True)
    out["epochs"] = counts
    out["error"] = 1.0 - va[at_min]
    out["final_val_acc"] = va[starts + counts - 1]
    for c, col in zip(cutoffs, cols):
        reached, first = first_where(va >= c)
        e = np.full(len(starts), np.nan)
        e[reached] = epoch[first]
        out[col] = e
    return out


def _trial_segments(epochs, keys: Sequence[str], x: str):
    """Rows with a full key and a validation accuracy, sorted by trial and ``x``; returns (frame,
    start index of each trial, trial index of each row)."""
    df = epochs.dropna(subset=[*keys, "val_acc"]).sort_values([*keys, x], kind="mergesort")
    new = np.zeros(len(df), dtype=bool)
    if len(df):
        new[0] = True
        for k in keys:
            v = df[k].to_numpy()
            new[1:] |= v[1:] != v[:-1]
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    return df, starts, group


def error_auc(epochs, keys: Sequence[str] = KEYS, x: str = "epoch"):
    """Per trial, the area under the validation-error curve (1 - val_acc) against ``x`` (epoch,
    or ``step`` / ``images_seen``) by the trapezoid rule over the recorded points, divided by the
    span from the first to the last point: the curve's mean error, in [0, 1].  A trial with one
    recorded point gets that point's error.  Paired across conditions, the points are the same
    (one protocol per trial).  Returns the ``keys`` and ``error_auc``, ``auc_span``."""
    import pandas as pd

    keys = list(keys)
    df, starts, group = _trial_segments(epochs, keys, x)
    if not len(df):
        return pd.DataFrame(columns=[*keys, "error_auc", "auc_span"])
    err = 1.0 - df["val_acc"].to_numpy(dtype=float)
    xs = df[x].to_numpy(dtype=float)
    same = np.r_[group[1:] == group[:-1], False]            # row i and i+1 in one trial
    seg = np.where(same[:-1], 0.5 * (err[:-1] + err[1:]) * (xs[1:] - xs[:-1]), 0.0)
    area = np.bincount(group[:-1], weights=seg, minlength=len(starts)) if len(seg) else np.zeros(len(starts))
    ends = np.r_[starts[1:], len(df)] - 1
    span = xs[ends] - xs[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(span > 0, area / np.where(span > 0, span, 1.0), err[starts])
    out = df[keys].iloc[starts].reset_index(drop=True)
    out["error_auc"] = auc
    out["auc_span"] = span
    return out


def common_cutoff(epochs, fraction: float = 0.9, by: Sequence[str] = ("n",),
                  keys: Sequence[str] = KEYS, condition_col: str = "condition"):
    """Per group of ``by`` (each sample size): a cut-off every condition reaches in at least half
    its trials: ``fraction`` times the lowest, over conditions, of the median over trials of a
    trial's best validation accuracy (the worst arm's ceiling).  Returns ``by`` and ``ceiling``,
    ``ceiling_condition`` (the arm that sets it), ``cutoff``."""
    import pandas as pd

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    by, keys = list(by), list(keys)
    best = epochs.dropna(subset=[*keys, "val_acc"]).groupby(keys, sort=True)["val_acc"].max().reset_index()
    med = best.groupby([*by, condition_col], sort=True)["val_acc"].median().reset_index()
    rows = []
    for key, g in med.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        worst = g.loc[g["val_acc"].idxmin()]
        rows.append({**dict(zip(by, key)), "ceiling": float(worst["val_acc"]),
                     "ceiling_condition": worst[condition_col],
                     "cutoff": fraction * float(worst["val_acc"])})
    return pd.DataFrame(rows, columns=[*by, "ceiling", "ceiling_condition", "cutoff"])


def epochs_to_common_cutoff(epochs, cutoffs, by: Sequence[str] = ("n",), keys: Sequence[str] = KEYS,
                            column: str = "epochs_to_common"):
    """Per trial, the first recorded epoch whose validation accuracy reaches its group's
    ``cutoff`` (a :func:`common_cutoff` frame), NaN when never.  Returns ``keys``, ``cutoff``
    and ``column``."""
    import pandas as pd

    by, keys = list(by), list(keys)
    df = epochs.dropna(subset=[*keys, "val_acc"]).merge(cutoffs[[*by, "cutoff"]], on=by, how="inner")
    df = df.sort_values([*keys, "epoch"], kind="mergesort")
    hit = df[df["val_acc"] >= df["cutoff"]].groupby(keys, sort=True)["epoch"].first()
    out = df.groupby(keys, sort=True)["cutoff"].first().reset_index()
    out[column] = out.set_index(keys).index.map(hit).astype(float).to_numpy() if len(out) else []
    return out if len(out) else pd.DataFrame(columns=[*keys, "cutoff", column])


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
