"""The image report: Figures 2, 3, C.3-C.6, significance and results tables, composed from the
plotting functions of :mod:`polarity.analysis.figures` (Markdown + PNG + CSV).

Tables: the paired comparison with the reference (ours: median difference [95% CI] with each
side's success counts, Wilcoxon, Holm over the table), the paper's Mann-Whitney U with the paper
code's Holm family, and the time-efficiency measures that do not depend on one fixed cut-off (the
area under the validation-error curve, epochs to a cut-off every arm reaches); every table's
caption names its Holm family.  Every condition is drawn in its one look
(``figures.condition_style``)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...analysis import figures
from ...analysis.metrics import (KEYS, common_cutoff, cutoff_column, epochs_to_common_cutoff,
                                 error_auc, per_trial, summarize)
from ...analysis.stats import (compare_to_reference, family_caption, paired_to_reference,
                               paper_comparison)
from ...analysis.tables import fmt, paired_cell
from .presets import (CHANCE_FRACTION, CONDITIONS, REFERENCE, ImageHparams, chance_cutoff,
                      condition_label, epochs_for)
from .protocol import HIST_BINS, HIST_HI, HIST_LO

COMMON_FRACTION = 0.9   # the common cut-off: 90% of the worst arm's median best accuracy, per n
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
    cuts = sorted(set(float(c) for c in hp.cutoffs) | {float(hp.cutoff)})
    main_col = cutoff_column(hp.cutoff)
    pt, common = _per_trial(epochs, cuts)
    summ = summarize(pt, cuts, by=("condition", "n"))
    pt.to_csv(outdir / "images_per_trial.csv", index=False)
    summ.to_csv(outdir / "images_summary.csv", index=False)
    common.to_csv(outdir / "common_cutoffs_images.csv", index=False)
    conds = _order(pt["condition"].unique())
    labels = {c: condition_label(c, slabel) for c in conds}
    style = {c: {"label": labels[c]} for c in conds}   # the look: figures.condition_style
    r = _Report(hp, outdir, conds, labels, style, dlabel,
                f"{dlabel}, {hp.arch} {hp.in_size}px, source {hp.source}", main_col, cuts)
    md = _header(r, pt, ex, slabel)
    md += _figure2(r, pt)
    stats = _statistics(r, pt)
    md += _figure3(r, pt, stats)
    md += _pvalue_table(r, pt, stats)
    md += _paper_table(r, stats)
    md += _common_cutoffs(r, common)
    md += _results_table(r, summ)
    md += _cutoff_figures(r, summ)
    md += _learning_curves(r, epochs)
    md += _sign_switches(r, epochs)
    md += _magnitudes(r, ex)
    return "\n".join(md) + "\n"


def _per_trial(epochs, cuts) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-trial measures (``metrics.per_trial``), the area under the validation-error curve
    and the epochs to the common cut-off (one per n: ``COMMON_FRACTION`` of the worst arm's
    median best accuracy); and the common cut-offs."""
    pt = per_trial(epochs, cuts)
    keys = [k for k in KEYS if k in pt]
    common = common_cutoff(epochs, COMMON_FRACTION, keys=keys)
    pt = pt.merge(error_auc(epochs, keys=keys)[[*keys, "error_auc"]], on=keys, how="left")
    ec = epochs_to_common_cutoff(epochs, common, keys=keys)
    return pt.merge(ec[[*keys, "epochs_to_common"]], on=keys, how="left"), common


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
          f"validation = {_validation(hp, ex)}; "
          f"{pt.groupby(['condition', 'n']).size().max()} trials per condition and n, n = "
          f"{', '.join(str(v) for v in sorted(pt['n'].unique()))}. {_cutoff_text(hp, ex)}", ""]
    # a number, or left out: a run made before source manifests were checked may hold their text
    acc = pd.to_numeric(ex["source_val_acc"], errors="coerce").dropna() if "source_val_acc" in ex else ()
    if len(acc):
        md += [f"Source network ({slabel}) accuracy on its own test split: {float(acc.iloc[0]):.3f}.", ""]
    return md


def _recorded(ex: pd.DataFrame, column: str) -> int | None:
    """An integer every trial records alike (None in runs made before it was recorded)."""
    return int(ex[column].dropna().iloc[0]) if column in ex and ex[column].notna().any() else None


def _validation(hp: ImageHparams, ex: pd.DataFrame) -> str:
    """The validation images the trials used: as recorded, else as ``hp`` asked for them."""
    used, pool = _recorded(ex, "val_images"), _recorded(ex, "val_pool")
    if used is None or pool is None:
        return "the whole test split" if hp.val_size is None else f"the first {hp.val_size} test images"
    return f"all {pool} held-out images" if used == pool else f"the first {used} of {pool} held-out images"


def _cutoff_text(hp: ImageHparams, ex: pd.DataFrame) -> str:
    """The cut-off, with the class count and chance level when the trials recorded them."""
    k = _recorded(ex, "num_classes")
    if k is None:
        return f"Cut-off {hp.cutoff:g}."
    how = (f" ({CHANCE_FRACTION:g} of the way from chance to 1, from the class count)"
           if hp.dataset.startswith("folder:") and hp.cutoff == chance_cutoff(k) else "")
    return (f"{k} classes: chance accuracy {1 / k:.3f} (chance error {1 - 1 / k:.3f}); "
            f"cut-off: validation accuracy {hp.cutoff:g}{how}.")


def _figure2(r: _Report, pt) -> list[str]:
    """Data efficiency (error at convergence), success rate and epochs to the cut-off against n."""
    hp, out = r.hp, r.outdir
    figures.plot_band(pt, "n", "error", out / "fig2a_error_images", logx=True, style=r.style,
                      title=f"Fig. 2 error at convergence -- {r.dlabel}", xlabel=N_LABEL,
                      ylabel="val error at min val loss (median, 25-75%)")
    has_ep = bool(pt[r.main_col].notna().any())  # a log axis of an empty plot fails
    figures.plot_success(pt, "n", r.main_col, out / "fig2b_success_images", logx=True,
                         style=r.style, xlabel=N_LABEL,
                         title=f"Fig. 2 success rate (val acc >= {hp.cutoff:g}) -- {r.dlabel}")
    figures.plot_epochs_to_cutoff(pt, "n", hp.cutoff, out / "fig2c_epochs_images", style=r.style,
                                  logx=has_ep, xlabel=N_LABEL,
                                  title=f"Fig. 2 epochs to {hp.cutoff:g} -- {r.dlabel}")
    return [f"### Figure 2: data and time efficiency ({r.dlabel})", "",
            "![fig2a](fig2a_error_images.png) ![fig2b](fig2b_success_images.png) "
            "![fig2c](fig2c_epochs_images.png)", "",
            f"({r.tag}; epochs to the cut-off are over the trials that reach it.)", ""]


def _metrics(r: _Report) -> list[tuple[str, str]]:
    """The compared metrics: (per-trial column, what it is).  Epochs to a cut-off: a trial that
    never reaches it ranks after every one that does (the stats module's "inf" policy)."""
    return [("error", "validation error"), (r.main_col, f"epochs to {r.hp.cutoff:g}"),
            ("error_auc", "error AUC"), ("epochs_to_common", "epochs to common cut-off")]


def _statistics(r: _Report, pt) -> dict[str, dict[str, pd.DataFrame]]:
    """Per n, every condition against the reference: the paired analysis (median paired
    difference, bootstrap 95% interval, Wilcoxon signed-rank) and the Mann-Whitney U, each with
    Holm-Bonferroni across the comparisons of a metric (ours); and the paper's Mann-Whitney U
    with its own Holm family (per n, failures omitted)."""
    if REFERENCE not in r.conds or len(r.conds) < 2:
        return {}
    out: dict[str, dict[str, pd.DataFrame]] = {"paired": {}, "mwu": {}, "paper": {}}
    for metric, _ in _metrics(r):
        policy = "inf" if metric.startswith("epochs_to") else "omit"
        out["paired"][metric] = paired_to_reference(pt, metric, reference=REFERENCE, by="n",
                                                    nan_policy=policy)
        out["mwu"][metric] = compare_to_reference(pt, metric, reference=REFERENCE, by="n",
                                                  nan_policy=policy)
        out["paper"][metric] = paper_comparison(pt, metric, reference=REFERENCE, by="n")
    return out


def _figure3(r: _Report, pt, stats) -> list[str]:
    """Paired differences against the reference: median over trials with its bootstrap 95%
    interval, stars from the Holm-corrected Wilcoxon test."""
    if not stats:
        return []
    ref_label = r.labels[REFERENCE]
    frame = pd.concat([st.assign(metric=m) for m, st in stats["paired"].items()], ignore_index=True)
    figures.plot_paired_differences(
        frame, r.outdir / "fig3_images",
        [(m, f"{nice}: condition - reference") for m, nice in _metrics(r)[:3]],
        r.conds, r.style, zero_color=figures.condition_style(REFERENCE)["color"], xlabel=N_LABEL,
        panel_title="paired by trial: median and 95% bootstrap CI",
        title=f"Figure 3 -- {r.tag}\nreference: {ref_label}; * p<0.05, ** p<0.01, *** p<0.001 "
              "(Wilcoxon signed-rank, Holm)")
    return [f"### Figure 3: paired differences against {ref_label} ({r.dlabel})", "",
            *r.figure("fig3_images.png"),
            "(A condition whose median paired difference is infinite -- most of its trials never "
            "reached the cut-off while the reference's did -- has no point in the epochs panel; "
            "the table below gives it.)", ""]


def _ordered(r: _Report, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by n, then conditions in the report's order."""
    o = [r.conds.index(c) if c in r.conds else len(r.conds) for c in frame["condition"]]
    return frame.assign(_o=o).sort_values(["n", "_o"]).drop(columns="_o")


def _pvalue_table(r: _Report, pt, stats) -> list[str]:
    if not stats:
        return []
    ref_label = r.labels[REFERENCE]
    pa_all = pd.concat([st.assign(metric=m) for m, st in stats["paired"].items()], ignore_index=True)
    md = [f"### Paired comparison against {ref_label} ({r.dlabel})", "",
          "Per n and trial, condition minus reference (negative: the condition has the lower "
          "error / reaches the cut-off sooner). Median over trials with a bootstrap 95% interval; "
          "'reached k/n vs k'/n': in how many pairs the condition and the reference reached the "
          "cut-off (a trial that never reaches it ranks after every one that does; two such tie); "
          "'lower' counts the trials in which the condition's value was below the reference's; "
          "two-sided Wilcoxon signed-rank p, exact given tied ranks and zeros, and beside it the "
          "unpaired Mann-Whitney U. Error AUC: the area under the validation-error curve over "
          "the recorded points divided by their span (the mean error along training); the common "
          "cut-off: see below. " + family_caption(pa_all, "both tests, per metric"),
          "", "| metric | n | condition | median diff [95% CI] | lower / pairs | Wilcoxon p (Holm) | | "
          "Mann-Whitney p (Holm) | |", "|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for metric, nice in _metrics(r):
        mw = stats["mwu"][metric].set_index(["n", "condition"])
        counts = metric.startswith("epochs_to")
        for _, row in _ordered(r, stats["paired"][metric]).iterrows():
            m = mw.loc[(row["n"], row["condition"])]
            md.append(f"| {nice} | {row['n']} | {r.labels.get(row['condition'], row['condition'])} | "
                      f"{paired_cell(row, counts=counts)} | {row['n_lower']}/{row['n_pairs']} | "
                      f"{fmt(row['p'])} ({fmt(row['p_holm'])}) | {row['stars']} | "
                      f"{fmt(m['p'])} ({fmt(m['p_holm'])}) | {m['stars']} |")
            rows.append({"metric": metric, **row.to_dict(),
                         "mwu_p": m["p"], "mwu_p_holm": m["p_holm"], "mwu_stars": m["stars"]})
    pd.DataFrame(rows).to_csv(r.outdir / "pvalues_images.csv", index=False)
    md.append("")
    k = int(pt.groupby(["condition", "n"]).size().min())
    if 2.0 / 2 ** k > 0.05:
        md += [f"Note: with {k} paired trials the smallest two-sided Wilcoxon p-value possible is "
               f"{2.0 / 2 ** k:.3g}, so no comparison can be significant at this scale.", ""]
    return md


def _paper_table(r: _Report, stats) -> list[str]:
    """The paper's test as its code ran it: Mann-Whitney U, Holm within each n, failures omitted."""
    if not stats:
        return []
    ref_label = r.labels[REFERENCE]
    frames = [st.assign(metric=m) for m, st in stats["paper"].items()]
    allp = pd.concat(frames, ignore_index=True)
    md = [f"### The paper's test against {ref_label} ({r.dlabel})", "",
          "Two-sided Mann-Whitney U on the two groups of trials (unpaired), medians over the "
          "trials with a value. " + family_caption(allp, "Mann-Whitney U, per metric"), "",
          "| metric | n | condition | median (reference) | trials (reference) | p (Holm) | |",
          "|---|---|---|---|---|---|---|"]
    for metric, nice in _metrics(r):
        for _, row in _ordered(r, stats["paper"][metric]).iterrows():
            md.append(f"| {nice} | {row['n']} | {r.labels.get(row['condition'], row['condition'])} | "
                      f"{fmt(row['median'])} ({fmt(row['reference_median'])}) | "
                      f"{row['count']} ({row['reference_count']}) | "
                      f"{fmt(row['p'])} ({fmt(row['p_holm'])}) | {row['stars']} |")
    allp.to_csv(r.outdir / "paper_mwu_images.csv", index=False)
    return md + [""]


def _common_cutoffs(r: _Report, common) -> list[str]:
    if not len(common):
        return []
    md = [f"### The common cut-off ({r.dlabel})", "",
          f"Per n, {COMMON_FRACTION:.0%} of the lowest median (over trials) best validation "
          "accuracy of any condition, so every arm reaches it in at least half its trials and "
          "time-efficiency is compared below every arm's ceiling ('epochs to the common cut-off' "
          "in the tables above).", "", "| n | worst arm | its median best accuracy | cut-off |",
          "|---|---|---|---|"]
    for _, row in common.iterrows():
        md.append(f"| {row['n']} | {r.labels.get(row['ceiling_condition'], row['ceiling_condition'])} | "
                  f"{row['ceiling']:.3f} | {row['cutoff']:.3f} |")
    return md + [""]


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
