"""The image report: Figures 2, 3, C.3-C.6, significance and results tables, composed from the
plotting functions of :mod:`polarity.analysis.figures` (Markdown + PNG + CSV)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...analysis import figures
from ...analysis.metrics import cutoff_column, per_trial, summarize
from ...analysis.stats import compare_to_reference
from .presets import CONDITIONS, REFERENCE, ImageHparams, condition_label
from .protocol import HIST_BINS, HIST_HI, HIST_LO

COLORS = {"fluid-rand": "#7f7f7f", "frozen-rand": "#1f77b4", "fluid-polarity": "#ff7f0e",
          "frozen-polarity": "#d62728", "fluid-weight": "#2ca02c", "frozen-weight": "#9467bd"}
STYLES = {"fluid": "--", "frozen": "-"}
DEFAULT_LABELS = {"fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
N_LABEL = "training samples n"


@dataclass
class _Report:
    """What every section needs: hparams, output folder, conditions in order and their look."""

    hp: ImageHparams
    outdir: Path
    conds: list[str]
    labels: dict[str, str]
    style: dict[str, dict[str, Any]]
    dlabel: str
    tag: str
    main_col: str
    cuts: list[float]

    def figure(self, name: str) -> list[str]:
        return [f"![{name}]({name})", ""]


def report(hp: ImageHparams, epochs, trials, outdir: Path) -> str:
    """Figures 2, 3, C.3-C.6, a p-value table and a results table (Markdown + PNG + CSV)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if epochs is None or len(epochs) == 0:
        return f"## Image reproduction ({hp.dataset})\n\nNo finished trials yet.\n"
    ex = _extras(trials)
    dlabel = _first(ex, "dataset_label", DEFAULT_LABELS.get(hp.dataset, hp.dataset))
    slabel = _first(ex, "source_label", "source")
    labels = {c: condition_label(c, slabel) for c in CONDITIONS}
    cuts = sorted(set(float(c) for c in hp.cutoffs) | {float(hp.cutoff)})
    main_col = cutoff_column(hp.cutoff)
    pt = per_trial(epochs, cuts)
    # a trial that never reaches a cut-off is ranked after every trial that does (censored at
    # epochs + 1) for the statistics; medians of epochs use the trials that reach it
    for c in cuts:
        col = cutoff_column(c)
        pt[col + "_censored"] = pt[col].fillna(pt["epochs"] + 1)
    summ = summarize(pt, cuts, by=("condition", "n"))
    pt.to_csv(outdir / "images_per_trial.csv", index=False)
    summ.to_csv(outdir / "images_summary.csv", index=False)
    conds = _order(pt["condition"].unique())
    style = {c: {"label": labels.get(c, c), "color": COLORS.get(c), "ls": STYLES.get(c.split("-")[0], "-")}
             for c in conds}
    r = _Report(hp, outdir, conds, labels, style, dlabel,
                f"{dlabel}, {hp.arch} {hp.in_size}px, source {hp.source}", main_col, cuts)
    md = _header(r, pt, ex, slabel)
    md += _figure2(r, pt)
    stat_frames = _statistics(r, pt)
    md += _figure3(r, pt, stat_frames)
    md += _pvalue_table(r, pt, stat_frames)
    md += _results_table(r, summ)
    md += _cutoff_figures(r, summ)
    md += _learning_curves(r, epochs)
    md += _sign_switches(r, epochs)
    md += _magnitudes(r, ex)
    return "\n".join(md) + "\n"


def _extras(trials) -> pd.DataFrame:
    """One row per trial: its key and its JSON ``extra`` as columns."""
    rows = []
    if trials is None or len(trials) == 0 or "extra" not in trials:
        return pd.DataFrame(columns=["condition", "n", "trial"])
    for _, r in trials.iterrows():
        ex = r["extra"]
        if isinstance(ex, str):
            try:
                ex = json.loads(ex)
            except ValueError:
                ex = {}
        ex = ex if isinstance(ex, dict) else {}
        rows.append({"condition": r["condition"], "n": int(r["n"]), "trial": int(r["trial"]), **ex})
    return pd.DataFrame(rows)


def _first(ex: pd.DataFrame, column: str, default: str) -> str:
    return ex[column].dropna().iloc[0] if column in ex and ex[column].notna().any() else default


def _order(conds) -> list[str]:
    known = [c for c in CONDITIONS if c in set(conds)]
    return known + sorted(set(conds) - set(known))


def _header(r: _Report, pt, ex, slabel: str) -> list[str]:
    hp = r.hp
    md = [f"## Image reproduction: {r.dlabel}", "",
          f"Architecture `{hp.arch}` at {hp.in_size}x{hp.in_size}, transfer source `{hp.source}`, "
          f"{hp.epochs} epochs, batch {hp.batch_size}, Adam lr {hp.lr}, reset `{hp.reset}`, "
          f"validation = {'the whole test split' if hp.val_size is None else f'the first {hp.val_size} test images'}; "
          f"{pt.groupby(['condition', 'n']).size().max()} trials per condition and n, n = "
          f"{', '.join(str(v) for v in sorted(pt['n'].unique()))}. Cut-off {hp.cutoff:g}.", ""]
    if "source_val_acc" in ex and ex["source_val_acc"].notna().any():
        md += [f"Source network ({slabel}) validation accuracy on its own task: "
               f"{float(ex['source_val_acc'].dropna().iloc[0]):.3f}.", ""]
    return md


def _figure2(r: _Report, pt) -> list[str]:
    """Data efficiency (error at convergence), success rate and epochs to the cut-off against n."""
    hp, out = r.hp, r.outdir
    lab = pt.assign(label=[r.labels.get(c, c) for c in pt["condition"]])
    figures.plot_band(lab, "n", "error", out / "fig2a_error_images", by="label", logx=True,
                      title=f"Fig. 2 error at convergence -- {r.dlabel}", xlabel=N_LABEL,
                      ylabel="val error at min val loss (median, 25-75%)")
    has_ep = bool(lab[r.main_col].notna().any())  # a log axis of an empty plot fails
    figures.plot_success(lab, "n", r.main_col, out / "fig2b_success_images", by="label", logx=True,
                         title=f"Fig. 2 success rate (val acc >= {hp.cutoff:g}) -- {r.dlabel}",
                         xlabel=N_LABEL)
    figures.plot_epochs_to_cutoff(lab, "n", hp.cutoff, out / "fig2c_epochs_images", by="label",
                                  logx=has_ep, xlabel=N_LABEL,
                                  title=f"Fig. 2 epochs to {hp.cutoff:g} -- {r.dlabel}")
    return [f"### Figure 2: data and time efficiency ({r.dlabel})", "",
            "![fig2a](fig2a_error_images.png) ![fig2b](fig2b_success_images.png) "
            "![fig2c](fig2c_epochs_images.png)", "",
            f"({r.tag}; epochs to the cut-off are over the trials that reach it.)", ""]


def _statistics(r: _Report, pt) -> dict[str, pd.DataFrame]:
    """Mann-Whitney U per n against the reference, Holm across the comparisons of a metric.
    Epochs to the cut-off: a trial that never reaches it ranks after every one that does (the
    stats module's "inf" policy); stored under the censored column's name."""
    if REFERENCE not in r.conds or len(r.conds) < 2:
        return {}
    return {"error": compare_to_reference(pt, "error", reference=REFERENCE, by="n"),
            r.main_col + "_censored": compare_to_reference(pt, r.main_col, reference=REFERENCE,
                                                           by="n", nan_policy="inf")}


def _figure3(r: _Report, pt, stat_frames) -> list[str]:
    """Paired differences against the reference condition, with significance stars."""
    if REFERENCE not in r.conds or len(r.conds) < 2:
        return []
    panels = [("error", "validation error"), (r.main_col + "_censored", f"epochs to {r.hp.cutoff:g}")]
    diffs = figures.paired_differences(pt, [m for m, _ in panels], REFERENCE, r.conds)
    if not len(diffs):
        return []
    ref_label = r.labels[REFERENCE]
    figures.plot_paired_differences(
        diffs, r.outdir / "fig3_images", [(m, f"{nice}: condition - reference") for m, nice in panels],
        r.conds, r.style, stats=stat_frames, zero_color=COLORS[REFERENCE], xlabel=N_LABEL,
        panel_title=f"reference: {ref_label} (paired by trial)",
        title=f"Figure 3 -- {r.tag}; * p<0.05, ** p<0.01, *** p<0.001 (Mann-Whitney, Holm)")
    return [f"### Figure 3: differences against {ref_label} ({r.dlabel})", "",
            *r.figure("fig3_images.png")]


def _pvalue_table(r: _Report, pt, stat_frames) -> list[str]:
    if not stat_frames:
        return []
    ref_label = r.labels[REFERENCE]
    md = [f"### Significance against {ref_label} ({r.dlabel})", "",
          "Two-sided Mann-Whitney U per n; Holm-Bonferroni across all comparisons of a metric "
          "(alpha 0.05). Epochs-to-cut-off: a trial that never reaches it ranks last.", "",
          "| metric | n | condition | p | p (Holm) | |", "|---|---|---|---|---|---|"]
    allst = []
    for metric, st in stat_frames.items():
        name = metric.replace("_censored", "")
        st = st.copy()
        st["metric"] = name
        allst.append(st)
        st["_o"] = [r.conds.index(c) if c in r.conds else len(r.conds) for c in st["condition"]]
        for _, row in st.sort_values(["n", "_o"]).iterrows():
            md.append(f"| {name} | {row['n']} | {r.labels.get(row['condition'], row['condition'])} "
                      f"| {row['p']:.3g} | {row['p_holm']:.3g} | {row.get('stars', '')} |")
    pd.concat(allst).drop(columns=["_o"]).to_csv(r.outdir / "pvalues_images.csv", index=False)
    md.append("")
    k = int(pt.groupby(["condition", "n"]).size().min())
    p_min = 2.0 / math.comb(2 * k, k)
    if p_min > 0.05:
        md += [f"Note: with {k} trials per condition the smallest two-sided Mann-Whitney p-value "
               f"possible is {p_min:.3g}, so no comparison can be significant at this scale "
               "(the paper uses 20 trials).", ""]
    return md


def _results_table(r: _Report, summ) -> list[str]:
    cut = r.hp.cutoff
    md = [f"### Results ({r.dlabel})", "",
          f"| n | condition | error median [25%, 75%] | success @{cut:g} | epochs to {cut:g} (median) |",
          "|---|---|---|---|---|"]
    summ = summ.assign(_o=[r.conds.index(c) for c in summ["condition"]])
    for _, row in summ.sort_values(["n", "_o"]).iterrows():
        md.append(f"| {row['n']} | {r.labels.get(row['condition'], row['condition'])} | "
                  f"{row['error_median']:.3f} [{row['error_q25']:.3f}, {row['error_q75']:.3f}] | "
                  f"{row[f'success_{cut:g}']:.2f} | {row[f'{r.main_col}_median']:.1f} |")
    return md + [""]


def _cutoff_figures(r: _Report, summ) -> list[str]:
    """Figures C.3 (success rate) and C.4 (epochs to the cut-off) across several cut-offs."""
    md = []
    for stem, what, col, ylabel in (
            ("figC3_images", "C.3: success rate across cut-offs", lambda c: f"success_{c:g}",
             "success rate"),
            ("figC4_images", "C.4: epochs to cut-off across cut-offs",
             lambda c: f"{cutoff_column(c)}_median", "epochs (median of trials reaching it)")):
        figures.plot_panels(summ, "n", [(col(c), f"cut-off {c:g}") for c in r.cuts], r.outdir / stem,
                            r.conds, r.style, xlabel=N_LABEL, ylabel=ylabel,
                            title=f"Figure {what} -- {r.tag}")
        md += [f"### Figure {what} ({r.dlabel})", "", *r.figure(f"{stem}.png")]
    return md


def _learning_curves(r: _Report, epochs) -> list[str]:
    figures.plot_learning_curves(epochs, r.outdir / "learning_curves_images", r.conds, r.style,
                                 hline=r.hp.cutoff, ylabel="val acc (median)",
                                 title=f"Learning curves -- {r.tag}")
    return [f"### Learning curves ({r.dlabel})", "", *r.figure("learning_curves_images.png")]


def _sign_switches(r: _Report, epochs) -> list[str]:
    """Figure C.5: per-layer sign switches of Fluid RAND between epochs."""
    label = r.labels["fluid-rand"]
    sw = figures.plot_sign_switches(
        epochs[epochs["condition"] == "fluid-rand"], r.outdir / "figC5_images",
        title=f"Figure C.5: {label} sign switches per layer between epochs -- {r.tag}")
    if sw is None:
        return []
    return [f"### Figure C.5: polarity switches in {label} ({r.dlabel})", "",
            *r.figure("figC5_images.png")]


def _magnitudes(r: _Report, ex) -> list[str]:
    """Figure C.6: |w| at initialisation per condition, and the magnitude-control table."""
    if "absw_hist" not in ex or not ex["absw_hist"].notna().any():
        return []
    lo, hi, bins = HIST_LO, HIST_HI, HIST_BINS
    rng = ex["absw_hist_range"].dropna()
    if len(rng):
        lo, hi, bins = rng.iloc[0]
    n0 = ex["n"].min()  # the init does not depend on n: one panel from the smallest n
    figures.plot_histograms(ex[ex["n"] == n0], "absw_hist", np.linspace(lo, hi, int(bins) + 1),
                            r.outdir / "figC6_images", r.conds, r.style,
                            xlabel="log10 |w| at initialisation (constrained weights)",
                            title=f"Figure C.6: |w| at initialisation (n = {n0}) -- {r.tag}")
    md = [f"### Figure C.6: magnitude control ({r.dlabel})", "", *r.figure("figC6_images.png")]
    if "magnitude_equal_rand" not in ex:
        return md
    md += ["| condition | trials whose sorted abs(w) at init equal the random init's | "
           "violations at start / end (frozen) |", "|---|---|---|"]
    for c in r.conds:
        f = ex[ex["condition"] == c]
        if not len(f):
            continue
        eq = f["magnitude_equal_rand"].astype(bool)
        viol = ""
        if c.startswith("frozen") and "final_violations" in f:
            viol = f"{int(f['init_violations'].sum())} / {int(f['final_violations'].sum())}"
        md.append(f"| {r.labels.get(c, c)} | {int(eq.sum())}/{len(f)} | {viol} |")
    return md + [""]
