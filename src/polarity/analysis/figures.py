"""Generic plotting helpers shared by the experiments' reports.

Every helper takes a per-trial frame (one row per trial, e.g. ``metrics.per_trial``'s output),
computes the summary it draws, writes the figure as PNG **and** the numbers behind it as CSV
(same stem), and returns the summary frame.  The matplotlib ``Agg`` backend is used, so no
display is needed.

* ``band_summary`` / ``plot_band``: median and 25-75% band of a per-trial column against ``x``,
  one line per group (``by``, e.g. condition).  NaN values (e.g. epochs-to-cut-off of a trial
  that never reached it) are left out of the quantiles; ``count`` says how many remained.
* ``success_summary`` / ``plot_success``: the fraction of trials whose column is not NaN
  (the success rate of SPEC §6) against ``x``.
* ``plot_epochs_to_cutoff``: ``plot_band`` of the ``epochs_to_<c>`` column, with a title.
* ``overlay`` (on every plot): extra reference curves ``{label: (xs, ys)}``, e.g. a theory
  curve; they are drawn dashed and also written to the CSV (``group`` = the label).
* ``markdown_table``: a small dependency-free Markdown table writer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Overlay = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def _groups(frame, by):
    if by is None:
        yield "all", frame
        return
    for key, g in frame.groupby(by, sort=True):
        if isinstance(key, tuple):
            key = key[0] if len(key) == 1 else "/".join(str(k) for k in key)
        yield str(key), g


def _check_columns(frame, cols):
    missing = [c for c in cols if c is not None and c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")


def band_summary(trials, x: str, y: str, by: str | None = "condition", lo: float = 0.25,
                 hi: float = 0.75):
    """Per (group, x): median, ``lo`` and ``hi`` quantiles of ``y`` over the non-NaN trials."""
    import pandas as pd

    _check_columns(trials, [x, y, by])
    rows = []
    for name, g in _groups(trials, by):
        for xv, gx in g.groupby(x, sort=True):
            v = gx[y].to_numpy(dtype=float)
            v = v[~np.isnan(v)]
            rows.append({
                "group": name, x: xv, "trials": len(gx), "count": int(v.size),
                "median": float(np.median(v)) if v.size else float("nan"),
                "q_lo": float(np.quantile(v, lo)) if v.size else float("nan"),
                "q_hi": float(np.quantile(v, hi)) if v.size else float("nan"),
            })
    return pd.DataFrame(rows, columns=["group", x, "trials", "count", "median", "q_lo", "q_hi"])


def success_summary(trials, x: str, y: str, by: str | None = "condition"):
    """Per (group, x): the fraction of trials whose ``y`` is not NaN."""
    import pandas as pd

    _check_columns(trials, [x, y, by])
    rows = []
    for name, g in _groups(trials, by):
        for xv, gx in g.groupby(x, sort=True):
            v = gx[y].to_numpy(dtype=float)
            rows.append({"group": name, x: xv, "trials": len(gx),
                         "success": float(np.mean(~np.isnan(v))) if v.size else float("nan")})
    return pd.DataFrame(rows, columns=["group", x, "trials", "success"])


def _finish(fig, ax, out: Path, title, xlabel, ylabel, logx, overlay, x, summary, ycol):
    import pandas as pd

    extra = []
    for label, (xs, ys) in (overlay or {}).items():
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        ax.plot(xs, ys, "--", lw=1.5, color="k" if not extra else None, label=label)
        extra.append(pd.DataFrame({"group": label, x: xs, ycol: ys}))
    vals = summary[ycol].to_numpy(dtype=float) if ycol in summary else np.array([])
    if not np.isfinite(vals).any() and not extra:
        ax.text(0.5, 0.5, "no trial reached it" if ycol == "median" else "no data",
                transform=ax.transAxes, ha="center", va="center")
    elif logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or ycol)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    plt.close(fig)
    table = pd.concat([summary, *extra], ignore_index=True) if extra else summary
    table.to_csv(out.with_suffix(".csv"), index=False)
    return table


def plot_band(trials, x: str, y: str, out: Path, by: str | None = "condition", *,
              title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
              logx: bool = False, overlay: Overlay | None = None, lo: float = 0.25,
              hi: float = 0.75):
    """Median of ``y`` vs ``x`` with a shaded ``lo``-``hi`` quantile band, one line per group.
    Writes ``out.png`` and ``out.csv``; returns the summary (plus overlay rows)."""
    s = band_summary(trials, x, y, by, lo, hi)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, g in s.groupby("group", sort=True):
        g = g.sort_values(x)
        line, = ax.plot(g[x], g["median"], "o-", ms=3, label=name)
        ax.fill_between(g[x], g["q_lo"], g["q_hi"], color=line.get_color(), alpha=0.2, lw=0)
    return _finish(fig, ax, out, title, xlabel, ylabel or f"{y} (median, {lo:.0%}-{hi:.0%})",
                   logx, overlay, x, s, "median")


def plot_success(trials, x: str, y: str, out: Path, by: str | None = "condition", *,
                 title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
                 logx: bool = False, overlay: Overlay | None = None):
    """Success rate (fraction of trials with ``y`` not NaN) vs ``x``, one line per group."""
    s = success_summary(trials, x, y, by)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, g in s.groupby("group", sort=True):
        g = g.sort_values(x)
        ax.plot(g[x], g["success"], "o-", ms=3, label=name)
    ax.set_ylim(-0.03, 1.03)
    return _finish(fig, ax, out, title, xlabel, ylabel or "success rate", logx, overlay, x, s,
                   "success")


def plot_epochs_to_cutoff(trials, x: str, cutoff: float, out: Path, by: str | None = "condition",
                          **kw):
    """Median (25-75% band) epochs to reach validation accuracy ``cutoff`` vs ``x``, over the
    trials that reach it."""
    from .metrics import cutoff_column

    kw.setdefault("title", f"epochs to {cutoff:g} validation accuracy")
    kw.setdefault("ylabel", f"epochs to {cutoff:g} (median, 25-75%)")
    return plot_band(trials, x, cutoff_column(cutoff), out, by, **kw)


def markdown_table(frame, floatfmt: str = ".3g", columns: Sequence[str] | None = None) -> str:
    """A Markdown pipe table of ``frame`` (no external dependency)."""
    cols = list(columns) if columns is not None else list(frame.columns)

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "nan" if np.isnan(v) else format(float(v), floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame[cols].iterrows():
        lines.append("| " + " | ".join(fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


__all__ = ["band_summary", "success_summary", "plot_band", "plot_success",
           "plot_epochs_to_cutoff", "markdown_table"]
