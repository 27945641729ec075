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
from ...analysis.stats import compare_to_reference, paired_to_reference
from .presets import CONDITIONS, REFERENCE, ImageHparams, condition_label, epochs_for
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
    stats = _statistics(r, pt)
    md += _figure3(r, pt, stats)
    md += _pvalue_table(r, pt, stats)
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
          f"epochs per n: {', '.join(f'{n}: {epochs_for(hp, n)}' for n in sorted(pt['n'].unique()))} "
          f"(at least {hp.min_steps} optimizer steps per started 1000 images), "
          f"batch {hp.batch_size}, Adam lr {hp.lr}, reset `{hp.reset}`, "
          f"{'validated every epoch' if hp.eval_points <= 0 else f'validated at {hp.eval_points} evenly spaced epochs'}, "
          f"validation = {'the whole test split' if hp.val_size is None else f'the first {hp.val_size} test images'}; "
          f"{pt.groupby(['condition', 'n']).size().max()} trials per condition and n, n = "
          f"{', '.join(str(v) for v in sorted(pt['n'].unique()))}. Cut-off {hp.cutoff:g}.", ""]
    if "source_val_acc" in ex and ex["source_val_acc"].notna().any():
        md += [f"Source network ({slabel}) accuracy on its own test split: "
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


def _metrics(r: _Report) -> list[tuple[str, str]]:
    """The compared metrics: (per-trial column, what it is).  Epochs to the cut-off: a trial that
    never reaches it ranks after every one that does (the stats module's "inf" policy)."""
    return [("error", "validation error"), (r.main_col, f"epochs to {r.hp.cutoff:g}")]


def _statistics(r: _Report, pt) -> dict[str, dict[str, pd.DataFrame]]:
    """Per n, every condition against the reference: the paired analysis (median paired
    difference, bootstrap 95% interval, Wilcoxon signed-rank) and the paper's Mann-Whitney U,
    each with Holm-Bonferroni across the comparisons of a metric."""
    if REFERENCE not in r.conds or len(r.conds) < 2:
        return {}
    out: dict[str, dict[str, pd.DataFrame]] = {"paired": {}, "mwu": {}}
    for metric, _ in _metrics(r):
        policy = "inf" if metric.startswith("epochs_to") else "omit"
        out["paired"][metric] = paired_to_reference(pt, metric, reference=REFERENCE, by="n",
                                                    nan_policy=policy)
        out["mwu"][metric] = compare_to_reference(pt, metric, reference=REFERENCE, by="n",
                                                  nan_policy=policy)
    return out


def _figure3(r: _Report, pt, stats) -> list[str]:
    """Paired differences against the reference: median over trials with its bootstrap 95%
    interval, stars from the Holm-corrected Wilcoxon test."""
    if not stats:
        return []
    ref_label = r.labels[REFERENCE]
    frame = pd.concat([st.assign(metric=m) for m, st in stats["paired"].items()], ignore_index=True)
    figures.plot_paired_differences(
        frame, r.outdir / "fig3_images", [(m, f"{nice}: condition - reference") for m, nice in _metrics(r)],
        r.conds, r.style, zero_color=COLORS[REFERENCE], xlabel=N_LABEL,
        panel_title="paired by trial: median and 95% bootstrap CI",
        title=f"Figure 3 -- {r.tag}\nreference: {ref_label}; * p<0.05, ** p<0.01, *** p<0.001 "
              "(Wilcoxon signed-rank, Holm)")
    return [f"### Figure 3: paired differences against {ref_label} ({r.dlabel})", "",
            *r.figure("fig3_images.png"),
            "(A condition whose median paired difference is infinite -- most of its trials never "
            "reached the cut-off while the reference's did -- has no point in the epochs panel; "
            "the table below gives it.)", ""]


def _fmt(v: float, digits: int = 3) -> str:
    return "inf" if v == math.inf else "-inf" if v == -math.inf else "nan" if v != v else f"{v:.{digits}g}"


def _pvalue_table(r: _Report, pt, stats) -> list[str]:
    if not stats:
        return []
    ref_label = r.labels[REFERENCE]
    md = [f"### Paired comparison against {ref_label} ({r.dlabel})", "",
          "Per n and trial, condition minus reference (negative: the condition has the lower "
          "error / reaches the cut-off sooner). Median over trials with a bootstrap 95% interval; "
          "'lower' counts the trials in which the condition's value was below the reference's; "
          "two-sided Wilcoxon signed-rank p, Holm-Bonferroni across all comparisons of a metric; "
          "beside it the paper's two-sided Mann-Whitney U (unpaired), Holm likewise. "
          "Epochs-to-cut-off: a trial that never reaches it ranks last.", "",
          "| metric | n | condition | median diff [95% CI] | lower / pairs | Wilcoxon p (Holm) | | "
          "Mann-Whitney p (Holm) | |", "|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for metric, nice in _metrics(r):
        pa = stats["paired"][metric]
        mw = stats["mwu"][metric].set_index(["n", "condition"])
        pa = pa.assign(_o=[r.conds.index(c) if c in r.conds else len(r.conds) for c in pa["condition"]])
        for _, row in pa.sort_values(["n", "_o"]).iterrows():
            m = mw.loc[(row["n"], row["condition"])]
            md.append(f"| {nice} | {row['n']} | {r.labels.get(row['condition'], row['condition'])} | "
                      f"{_fmt(row['median_diff'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}] | "
                      f"{row['n_lower']}/{row['n_pairs']} | {row['p']:.3g} ({row['p_holm']:.3g}) | "
                      f"{row['stars']} | {m['p']:.3g} ({m['p_holm']:.3g}) | {m['stars']} |")
            rows.append({"metric": metric, **row.drop("_o").to_dict(),
                         "mwu_p": m["p"], "mwu_p_holm": m["p_holm"], "mwu_stars": m["stars"]})
    pd.DataFrame(rows).to_csv(r.outdir / "pvalues_images.csv", index=False)
    md.append("")
    k = int(pt.groupby(["condition", "n"]).size().min())
    if 2.0 / 2 ** k > 0.05:
        md += [f"Note: with {k} paired trials the smallest two-sided Wilcoxon p-value possible is "
               f"{2.0 / 2 ** k:.3g}, so no comparison can be significant at this scale.", ""]
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
