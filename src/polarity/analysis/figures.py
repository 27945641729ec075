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

One look per condition, in every figure of every run (``condition_style``): the colour says what
the template is (RAND, transferred polarity, transferred weights, the shuffled / balanced
controls, the oracle, XOR's sufficient template), the line style says frozen (solid) or fluid
(dashed), and the marker (filled: frozen, open: fluid) keeps coinciding lines visible.
``name@variant`` (a reset method, a dose-response source) keeps its base's line style and marker
and takes a colour of its own; unknown names get a deterministic one (a hash of the name).
Every plotting function below takes its look from it; a ``style`` argument only adds labels or
overrides.

Multi-panel figures of the image report (each draws groups in a given order with a ``style``
``{group: {"label", "color", "ls", "marker"}}`` and writes PNG and CSV under one stem):

* ``plot_paired_differences``: median paired differences against a reference group with their
  bootstrap intervals and stars (Figure 3), from ``stats.paired_to_reference`` tables;
* ``plot_panels``: one panel per column (e.g. per cut-off, Figures C.3/C.4);
* ``plot_learning_curves``: median validation accuracy per epoch, one panel per ``n``;
* ``plot_sign_switches``: per-layer sign-switch fractions between epochs (Figure C.5);
* ``plot_histograms``: summed histograms per group on fixed bin edges (Figure C.6).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Overlay = Mapping[str, tuple[Sequence[float], Sequence[float]]]
Style = Mapping[str, Mapping[str, Any]]  # group -> {"label", "color", "ls", "marker"}

# ----------------------------------------------------------------------------- one look per condition

#: colour and marker of each template kind (the part of a condition name after "frozen-"/"fluid-")
KIND_LOOK: dict[str, tuple[str, str]] = {
    "rand": ("#1f77b4", "o"),        # blue
    "polarity": ("#d62728", "s"),    # red
    "weight": ("#2ca02c", "^"),      # green
    "shuffled": ("#ff7f0e", "v"),    # orange  (control: no structure)
    "balanced": ("#9467bd", "D"),    # purple  (control: 50/50 signs)
    "oracle": ("#000000", "*"),      # black   (upper bound)
    "sufficient": ("#e377c2", "P"),  # pink    (XOR-5D's sufficient template)
}
STATE_LS = {"frozen": "-", "fluid": "--"}
#: colours of ``@variant`` names and unknown kinds, none of them a kind's colour above
FALLBACK_COLORS = ("#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#e6550d", "#637939",
                   "#843c39", "#7b4173", "#3182bd", "#31a354", "#756bb1")
FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "h", "<", ">")
VARIANT_COLORS = {"posRand": "#8c564b", "posCon": "#17becf", "zero": "#bcbd22", "flip": "#393b79"}


def _hash(name: str) -> int:
    import zlib

    return zlib.crc32(name.encode())


def is_condition(name: str) -> bool:
    """A name the style map treats as a condition: ``frozen-*`` or ``fluid-*``."""
    return str(name).split("-", 1)[0] in STATE_LS and "-" in str(name)


def condition_style(name: str) -> dict[str, Any]:
    """The look of condition ``name`` in every figure: ``{"color", "ls", "marker",
    "markerfacecolor"}`` (see the module docstring).  Deterministic: the same name gets the same
    look in every figure and every run, whatever else is drawn beside it."""
    name = str(name)
    base, _, variant = name.partition("@")
    state, _, kind = base.partition("-")
    ls = STATE_LS.get(state, ":")
    color, marker = KIND_LOOK.get(kind, (None, None))
    if color is None:   # an unknown kind: a colour and marker from the name's hash
        h = _hash(base)
        color, marker = FALLBACK_COLORS[h % len(FALLBACK_COLORS)], FALLBACK_MARKERS[h % len(FALLBACK_MARKERS)]
    if variant:
        color = VARIANT_COLORS.get(variant, FALLBACK_COLORS[_hash(variant) % len(FALLBACK_COLORS)])
    return {"color": color, "ls": ls, "marker": marker,
            "markerfacecolor": "none" if state == "fluid" else color}


def _line_kw(style: Style | None, group: str, default_color=None) -> tuple[str, dict[str, Any]]:
    """(legend label, matplotlib keywords) of ``group``: the condition style (for condition
    names), then ``style``'s entries over it."""
    s = dict(style.get(group, {}) if style else {})
    look = condition_style(group) if is_condition(group) else {"ls": "-", "marker": "o",
                                                              "color": default_color}
    look.update({k: v for k, v in s.items() if k != "label" and v is not None})
    look.setdefault("markerfacecolor", look.get("color"))
    if look.get("markerfacecolor") is None:
        look.pop("markerfacecolor")
    return s.get("label", group), {"color": look.get("color"), "ls": look["ls"],
                                   "marker": look["marker"], "ms": 4,
                                   **({"markerfacecolor": look["markerfacecolor"]}
                                      if "markerfacecolor" in look else {})}


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


def _cycle(i: int):
    return plt.rcParams["axes.prop_cycle"].by_key()["color"][i % 10]


def plot_band(trials, x: str, y: str, out: Path, by: str | None = "condition", *,
              title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
              logx: bool = False, overlay: Overlay | None = None, lo: float = 0.25,
              hi: float = 0.75, style: Style | None = None):
    """Median of ``y`` vs ``x`` with a shaded ``lo``-``hi`` quantile band, one line per group
    (a condition's look from ``condition_style``; ``style`` adds labels).  Writes ``out.png`` and
    ``out.csv``; returns the summary (plus overlay rows)."""
    s = band_summary(trials, x, y, by, lo, hi)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (name, g) in enumerate(s.groupby("group", sort=True)):
        g = g.sort_values(x)
        label, kw = _line_kw(style, name, _cycle(i))
        line, = ax.plot(g[x], g["median"], label=label, **kw)
        ax.fill_between(g[x], g["q_lo"], g["q_hi"], color=line.get_color(), alpha=0.2, lw=0)
    return _finish(fig, ax, out, title, xlabel, ylabel or f"{y} (median, {lo:.0%}-{hi:.0%})",
                   logx, overlay, x, s, "median")


def plot_success(trials, x: str, y: str, out: Path, by: str | None = "condition", *,
                 title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
                 logx: bool = False, overlay: Overlay | None = None, style: Style | None = None):
    """Success rate (fraction of trials with ``y`` not NaN) vs ``x``, one line per group."""
    s = success_summary(trials, x, y, by)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (name, g) in enumerate(s.groupby("group", sort=True)):
        g = g.sort_values(x)
        label, kw = _line_kw(style, name, _cycle(i))
        ax.plot(g[x], g["success"], label=label, **kw)
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


# ----------------------------------------------------------------------------- multi-panel figures

def _lines(ax, frame, x: str, y: str, groups: Sequence[str], style: Style | None,
           by: str = "condition", lo: str | None = None, hi: str | None = None,
           logx: bool = True) -> None:
    """One line of ``y`` against ``x`` per group (in ``groups`` order), with a ``lo``-``hi`` band."""
    for g in groups:
        f = frame[frame[by] == g]
        if not len(f):
            continue
        label, kw = _line_kw(style, g)
        f = f.sort_values(x)
        line, = ax.plot(f[x], f[y], label=label, **kw)
        if lo is not None:
            ax.fill_between(f[x], f[lo], f[hi], color=line.get_color(), alpha=0.15, lw=0)
    if logx and frame[y].notna().any():  # a log axis of an empty plot fails
        ax.set_xscale("log")


def _save(fig, out: Path, table=None) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if table is not None:
        table.to_csv(out.with_suffix(".csv"), index=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)


def plot_paired_differences(stats, out: Path, panels: Sequence[tuple[str, str]],
                            groups: Sequence[str], style: Style | None = None, *, x: str = "n",
                            by: str = "condition", zero_color=None, xlabel: str | None = None,
                            panel_title: str | None = None, title: str | None = None):
    """One panel per ``(metric, ylabel)``: the median paired difference per group against ``x``
    with its confidence band, a line at 0, and each row's ``stars`` above its point.  ``stats``
    holds ``polarity.analysis.stats.paired_to_reference`` frames with a ``metric`` column.
    Writes ``out.png`` and ``out.csv``."""
    fig, axs = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (metric, ylabel) in zip(axs.flat, panels):
        dm = stats[stats["metric"] == metric].replace([np.inf, -np.inf], np.nan)
        _lines(ax, dm, x, "median_diff", groups, style, by, "ci_low", "ci_high")
        ax.set_xlabel(xlabel or x)
        ax.axhline(0, color=zero_color, lw=1)
        for _, r in dm.iterrows():
            if r.get("stars") and np.isfinite(r["median_diff"]):
                ax.annotate(str(r["stars"]), (r[x], float(r["median_diff"])),
                            color=_line_kw(style, r[by])[1]["color"], fontsize=9, ha="center",
                            va="bottom")
        ax.set_ylabel(ylabel)
        if panel_title:
            ax.set_title(panel_title, fontsize=9)
    axs.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, out, stats)
    return stats


def plot_panels(frame, x: str, panels: Sequence[tuple[str, str]], out: Path,
                groups: Sequence[str], style: Style | None = None, *, by: str = "condition",
                xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
                ncol: int = 4):
    """One panel per ``(column, panel title)``, each a line per group against ``x`` (log axis);
    at most ``ncol`` panels a row.  Writes ``out.png`` and the columns drawn as ``out.csv``."""
    ncol = min(len(panels), ncol)
    nrow = math.ceil(len(panels) / ncol)
    fig, axs = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.3 * nrow), squeeze=False)
    for ax, (col, ptitle) in zip(axs.flat, panels):
        _lines(ax, frame, x, col, groups, style, by)
        ax.set_xlabel(xlabel or x)
        ax.set_title(ptitle, fontsize=9)
        ax.set_ylabel(ylabel or "", fontsize=8)
    for ax in list(axs.flat)[len(panels):]:
        ax.axis("off")
    axs.flat[0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    table = frame[[by, x, *[c for c, _ in panels]]]
    _save(fig, out, table)
    return table


def plot_learning_curves(epochs, out: Path, groups: Sequence[str], style: Style | None = None, *,
                         y: str = "val_acc", panel: str = "n", by: str = "condition",
                         hline: float | None = None, ylabel: str | None = None,
                         title: str | None = None):
    """Median ``y`` per epoch, one line per group, one panel per value of ``panel``; a dotted
    line at ``hline`` (e.g. the cut-off).  Writes ``out.png`` and the medians as ``out.csv``."""
    lc = epochs.groupby([by, panel, "epoch"])[y].median().reset_index()
    values = sorted(lc[panel].unique())
    fig, axs = plt.subplots(1, len(values), figsize=(4 * len(values), 3.3), squeeze=False)
    for ax, v in zip(axs.flat, values):
        for g in groups:
            f = lc[(lc[by] == g) & (lc[panel] == v)]
            label, kw = _line_kw(style, g)
            ax.plot(f["epoch"], f[y], label=label, markevery=max(len(f) // 8, 1), **kw)
        if hline is not None:
            ax.axhline(hline, color="k", lw=0.5, ls=":")
        ax.set_title(f"{panel} = {v}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel or f"{y} (median)")
    axs.flat[0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, out, lc)
    return lc


def _layer_key(col: str):
    """Network order of ``switch/<parameter>`` columns: ``features.*`` before ``classifier.*``,
    numeric indices compared as numbers."""
    parts = str(col)[len("switch/"):].split(".")
    return (parts[0] == "classifier", [int(q) if q.isdigit() else -1 for q in parts])


def plot_sign_switches(epochs, out: Path, *, panel: str = "n", title: str | None = None):
    """Median fraction of signs switched between consecutive epochs, one line per layer (the
    ``switch/<parameter>`` columns), one panel per value of ``panel``, log scale.  Writes
    ``out.png`` and ``out.csv``; returns the medians, or None when there is nothing to draw."""
    cols = sorted((c for c in epochs.columns if str(c).startswith("switch/")), key=_layer_key)
    if not cols or not len(epochs):
        return None
    sw = epochs.groupby([panel, "epoch"])[cols].median().reset_index()
    values = sorted(sw[panel].unique())
    fig, axs = plt.subplots(1, len(values), figsize=(4 * len(values), 3.3), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, v in zip(axs.flat, values):
        f = sw[sw[panel] == v].dropna(subset=cols, how="all")
        for i, col in enumerate(cols):
            ax.plot(f["epoch"], f[col], color=cmap(i / max(len(cols) - 1, 1)),
                    label=col[len("switch/"):])
        ax.set_yscale("log", nonpositive="mask")
        ax.set_title(f"{panel} = {v}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("fraction of signs switched")
    axs.flat[0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, out, sw)
    return sw


def plot_histograms(frame, column: str, edges: Sequence[float], out: Path, groups: Sequence[str],
                    style: Style | None = None, *, by: str = "condition",
                    xlabel: str | None = None, title: str | None = None):
    """Per group, the sum of the histograms in ``column`` (lists of counts on ``edges``), drawn
    normalised as stairs.  Writes ``out.png`` and the summed counts (``bin_<i>``) as ``out.csv``."""
    import pandas as pd

    fig, ax = plt.subplots(figsize=(7, 4))
    rows = []
    for g in groups:
        h = [np.asarray(v, dtype=float) for v in frame.loc[frame[by] == g, column]
             if isinstance(v, (list, tuple))]
        if not h:
            continue
        tot = np.sum(h, axis=0)
        label, kw = _line_kw(style, g)
        ax.stairs(tot / max(tot.sum(), 1), edges, color=kw["color"], ls=kw["ls"], label=label)
        rows.append({by: g, **{f"bin_{i}": v for i, v in enumerate(tot)}})
    ax.set_xlabel(xlabel or column)
    ax.set_ylabel("fraction")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    table = pd.DataFrame(rows)
    _save(fig, out, table)
    return table


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


__all__ = ["condition_style", "is_condition", "KIND_LOOK", "STATE_LS", "band_summary", "success_summary", "plot_band", "plot_success",
           "plot_epochs_to_cutoff", "plot_paired_differences", "plot_panels",
           "plot_learning_curves", "plot_sign_switches", "plot_histograms", "markdown_table"]
