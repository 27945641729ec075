"""The dose-response report: per n and source, the paired benefit of its frozen transferred
polarity over fluid RAND and over its own shuffled template, against how much the source learned
(1 - its init agreement) and its test accuracy.  A table (Markdown + CSV) and one figure.

Benefit = RAND's (or the shuffled template's) validation error minus the transferred polarity's,
median over the paired trials with its bootstrap 95% interval and the two-sided Wilcoxon p
(``polarity.analysis.stats.paired_difference``), Holm across every comparison of the table.
Positive: the transferred polarity has the lower error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ...analysis import figures  # the Agg backend, before pyplot; one look per condition
from ...analysis.metrics import per_trial
from ...analysis.stats import holm, paired_difference
from ...analysis.tables import family_caption, paired_cell
from .presets import ORACLE_LABEL, ImageHparams, dose_key, epochs_for

COMPARISONS = (("fluid-rand", "fluid RAND"), ("frozen-shuffled", "its shuffled template"))
XAXES = (("learned", "learned fraction of the source's signs (1 - init agreement)"),
         ("source_test_accuracy", "source test accuracy"))


def _extras(trials) -> pd.DataFrame:
    rows = []
    for _, r in (trials if trials is not None else pd.DataFrame()).iterrows():
        ex = r.get("extra")
        ex = json.loads(ex) if isinstance(ex, str) else ex
        if isinstance(ex, dict):
            rows.append({"condition": r["condition"], "n": int(r["n"]), "trial": int(r["trial"]), **ex})
    return pd.DataFrame(rows)


def sources_table(ex: pd.DataFrame, order=()) -> pd.DataFrame:
    """One row per source, in ``order`` (the study's) where given: what the trials recorded of it
    (the same in every trial)."""
    cols = ["dose_source", "source_name", "source_label", "oracle", "source_init_agreement",
            "source_test_accuracy", "source_negative_fraction", "source_dead_unit_fraction"]
    if "dose_source" not in ex:
        return pd.DataFrame(columns=cols + ["learned", "tag"])
    src = ex.dropna(subset=["dose_source"]).drop_duplicates("dose_source")
    rank = {s: i for i, s in enumerate(order)}
    src = src.assign(_r=[rank.get(s, len(rank)) for s in src["dose_source"]]).sort_values(
        "_r", kind="mergesort")
    src = src.reindex(columns=cols)
    src["learned"] = 1.0 - pd.to_numeric(src["source_init_agreement"], errors="coerce")
    src["tag"] = [f"S{i + 1}" for i in range(len(src))]  # the figure's name of each source
    src["source_test_accuracy"] = pd.to_numeric(src["source_test_accuracy"], errors="coerce")
    return src.reset_index(drop=True)


def benefits(pt: pd.DataFrame, sources: pd.DataFrame, arm: str = "frozen-polarity") -> pd.DataFrame:
    """Per n, source and comparison: the paired benefit of ``arm@source`` (see the module
    docstring), Holm across all rows."""
    rows = []
    for n, g in pt.groupby("n", sort=True):
        wide = g.pivot_table(index="trial", columns="condition", values="error", aggfunc="first")
        for _, s in sources.iterrows():
            mine = dose_key(arm, s["dose_source"])
            if mine not in wide:
                continue
            for ref, nice in COMPARISONS:
                other = ref if ref in ("fluid-rand", "frozen-rand") else dose_key(ref, s["dose_source"])
                if other not in wide:
                    continue
                pair = wide[[other, mine]].dropna()
                r = paired_difference(pair[other].to_numpy(), pair[mine].to_numpy())
                rows.append({"n": int(n), "dose_source": s["dose_source"], "versus": ref,
                             "versus_label": nice, "error_median": float(pair[mine].median()),
                             "versus_error_median": float(pair[other].median()),
                             "benefit": r.median, "ci_low": r.ci_low, "ci_high": r.ci_high,
                             "better": r.n_higher, "pairs": r.n, "p": r.p})
    out = pd.DataFrame(rows, columns=["n", "dose_source", "versus", "versus_label", "error_median",
                                      "versus_error_median", "benefit", "ci_low", "ci_high",
                                      "better", "pairs", "p"])
    out["p_holm"] = holm(out["p"].to_numpy())[0] if len(out) else []
    return out.merge(sources, on="dose_source", how="left")


def _label(s) -> str:
    name = s["source_name"] if isinstance(s["source_name"], str) else s["dose_source"]
    return f"{name} [{ORACLE_LABEL}]" if bool(s["oracle"]) else name


def plot_benefits(b: pd.DataFrame, out: Path, title: str) -> None:
    """Rows: benefit over fluid RAND / over the shuffled template; columns: against the learned
    fraction / the source's accuracy; each row in the colour of the arm it compares with
    (``figures.condition_style``, as in every other figure), n told apart by the marker (filled
    for the smallest n, open for the others), the oracle drawn as a star; 95% intervals;
    each source's tag (S1, S2, ... as in the table) beside its point of the smallest n; the points
    of different n are drawn slightly apart along x so their intervals do not hide each other."""
    import matplotlib.pyplot as plt

    ns = sorted(b["n"].unique())
    fig, axs = plt.subplots(len(COMPARISONS), len(XAXES), figsize=(11, 8), squeeze=False)
    for i, (ref, nice) in enumerate(COMPARISONS):
        for j, (xcol, xlabel) in enumerate(XAXES):
            ax = axs[i, j]
            ax.axhline(0, color="0.5", lw=1)
            xs = pd.to_numeric(b[xcol], errors="coerce").dropna()
            span = float(xs.max() - xs.min()) if len(xs) > 1 and xs.max() > xs.min() else 0.1
            color = figures.condition_style(ref)["color"]
            for k, n in enumerate(ns):
                f = b[(b["versus"] == ref) & (b["n"] == n)].dropna(subset=[xcol])
                dodge = (k - (len(ns) - 1) / 2) * 0.015 * span  # each n a little apart
                shapes = ("o", "s", "^", "D", "v")
                for oracle, marker in ((False, shapes[k % len(shapes)]), (True, "*")):
                    g = f[f["oracle"].astype(bool) == oracle].sort_values(xcol)
                    if not len(g):
                        continue
                    yerr = np.vstack([g["benefit"] - g["ci_low"], g["ci_high"] - g["benefit"]])
                    ax.errorbar(g[xcol] + dodge, g["benefit"], yerr=np.clip(yerr, 0, None), fmt=marker,
                                color=color, ms=9 if oracle else 5, capsize=3,
                                markerfacecolor=color if k == 0 else "white",
                                label=f"n = {n}" + (f", {ORACLE_LABEL}" if oracle else ""))
                    if n == ns[0]:  # name each source once
                        for _, r in g.iterrows():
                            ax.annotate(r["tag"], (r[xcol] + dodge, r["benefit"]), fontsize=7,
                                        xytext=(4, 4), textcoords="offset points", color="0.3")
            ax.set_xlabel(xlabel, fontsize=9)
            ax.set_ylabel(f"error of {nice} - error of\ntransferred polarity (median, 95% CI)", fontsize=8)
            ax.set_title(f"benefit over {nice}", fontsize=9)
    for i in range(len(COMPARISONS)):
        if axs[i, 0].get_legend_handles_labels()[0]:
            axs[i, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _fmt(v, spec: str = ".3f") -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else format(v, spec)


def report(hp: ImageHparams, epochs, trials, outdir: Path) -> str:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    head = f"## Dose-response: transferred polarity against what its source learned ({hp.dataset})"
    if epochs is None or len(epochs) == 0:
        return f"{head}\n\nNo finished trials yet.\n"
    pt = per_trial(epochs, (float(hp.cutoff),))
    ex = _extras(trials)
    sources = sources_table(ex, [*getattr(hp, "sources", ()), hp.oracle_source])
    b = benefits(pt, sources)
    pt.to_csv(outdir / "dose_per_trial.csv", index=False)
    b.to_csv(outdir / "dose_benefits.csv", index=False)
    dlabel = ex["dataset_label"].dropna().iloc[0] if "dataset_label" in ex and ex["dataset_label"].notna().any() else hp.dataset
    k = int(pt.groupby(["condition", "n"]).size().min())
    md = [head, "",
          f"Target {dlabel}; every source's arms against one fluid RAND run per trial (same init, "
          f"data order and validation images), {k} paired trials per n, n = "
          f"{', '.join(str(n) for n in sorted(pt['n'].unique()))}; {hp.arch} width "
          f"{hp.model_width:g} at {hp.in_size}px, epochs per n: "
          f"{', '.join(f'{n}: {epochs_for(hp, n)}' for n in sorted(pt['n'].unique()))}, batch "
          f"{hp.batch_size}, Adam lr {hp.lr:g}; validation error at the epoch of minimum "
          "validation loss. Benefit = the "
          "other arm's validation error minus the transferred polarity's (positive: transferred "
          "polarity is better), median over trials with a bootstrap 95% interval; 'better' counts "
          "the trials it was lower; Wilcoxon signed-rank p (exact under ties). "
          + family_caption("table", "Wilcoxon signed-rank", by="n, source and comparison") + " Learned = 1 - "
          "the source's sign agreement with its own initialisation (from its manifest; n/a when "
          "the manifest has none).", "",
          "| tag | source | learned | test acc | negative fraction | n | error | vs fluid RAND [95% CI] | better | p (Holm) | vs own shuffled [95% CI] | better | p (Holm) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, s in sources.iterrows():
        for n in sorted(b["n"].unique()):
            rows = b[(b["dose_source"] == s["dose_source"]) & (b["n"] == n)].set_index("versus")
            if not len(rows):
                continue
            cells = []
            for ref, _ in COMPARISONS:
                if ref in rows.index:
                    r = rows.loc[ref]
                    cells += [paired_cell({"median_diff": r["benefit"], "ci_low": r["ci_low"],
                                           "ci_high": r["ci_high"], "n_pairs": r["pairs"]}),
                              f"{int(r['better'])}/{int(r['pairs'])}", f"{_fmt(r['p_holm'], '.3g')}"]
                else:
                    cells += ["", "", ""]
            md.append(f"| {s['tag']} | {_label(s)} | {_fmt(s['learned'])} | {_fmt(s['source_test_accuracy'])} | "
                      f"{_fmt(s['source_negative_fraction'])} | {n} | {_fmt(rows.iloc[0]['error_median'])} | "
                      + " | ".join(cells) + " |")
    md.append("")
    if len(b):
        plot_benefits(b, outdir / "dose_benefit.png",
                      f"Dose-response ({dlabel}, {k} paired trials): benefit of frozen transferred "
                      "polarity against what its source learned")
        md += ["![dose-response](dose_benefit.png)", ""]
    return "\n".join(md) + "\n"


__all__ = ["report", "benefits", "sources_table", "plot_benefits", "COMPARISONS"]
