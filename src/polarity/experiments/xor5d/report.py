"""The XOR-5D report: Figures 1B/1C, 4A-4D, C.1 and the sign-switch plot (drawn by
``polarity.analysis.figures``), the per-trial and summary tables, and the theory overlay of
Figure 4A (``polarity.theory``), computed only from the store's tidy frames."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ...analysis import figures as F
from ...analysis.metrics import cutoff_column, per_trial, summarize
from ...theory import exact_probability, reference_probability
from .conditions import XorHparams


def theory_curves(widths: Sequence[int], dim: int = 5) -> dict[str, tuple[list, list]]:
    """Figure 4A's theory curves: the reference formula for ``dim`` inputs and, for the 5-D
    network, the exact probability that a randomly-signed net of each width represents XOR on
    its own support (biases free, noise inputs present, the quadrant squares)."""
    ws = sorted(set(int(w) for w in widths))
    out = {"theory: reference formula": (ws, [float(reference_probability(w, d=dim)) for w in ws])}
    if dim == 5:
        out["theory: exact (xor5d network)"] = (ws, [float(exact_probability(w, variant="xor5d")[0]) for w in ws])
    return out


def _fmt_cell(r, c: float) -> str:
    col = f"epochs_to_{c:g}_median"
    ep = r.get(col, float("nan"))
    ep_s = "-" if ep != ep else f"{ep:.0f}"
    return (f"{r['error_median']:.3f} [{r['error_q25']:.3f}, {r['error_q75']:.3f}] / "
            f"{ep_s} / {r[f'success_{c:g}']:.2f}")


def _pivot_table(summ, axis: str, conds: Sequence[str], c: float) -> list[str]:
    rows = []
    for x, g in summ.groupby(axis, sort=True):
        row = {axis: int(x)}
        for cond in conds:
            gc = g[g["condition"] == cond]
            row[cond] = _fmt_cell(gc.iloc[0], c) if len(gc) else "-"
        rows.append(row)
    return [F.markdown_table(pd.DataFrame(rows), columns=[axis, *conds])]


def xor_report(hp: XorHparams, epochs, trials, outdir: Path) -> str:
    """Write the figures and tables of a (possibly partial) run to ``outdir``; returns the
    Markdown section."""
    outdir.mkdir(parents=True, exist_ok=True)
    cutoffs = tuple(hp.cutoffs) or (0.9,)
    c0 = cutoffs[0]
    ecol = cutoff_column(c0)
    pt = per_trial(epochs, cutoffs=cutoffs)
    summ = summarize(pt, cutoffs=cutoffs)
    pt.to_csv(outdir / "xor5d_per_trial.csv", index=False)
    summ.to_csv(outdir / "xor5d_summary.csv", index=False)
    conds = [c for c in hp.conditions if c in set(pt["condition"])] + sorted(set(pt["condition"]) - set(hp.conditions))
    ns, ws = sorted(pt["n"].unique()), sorted(pt["width"].unique())
    main_w = 64 if 64 in ws else ws[-1]
    main_n = 500 if 500 in ns else ns[-1]
    lines = ["## XOR-5D (paper Figures 1, 4, C.1)", "",
             f"Network 5→H→1 (ReLU, sigmoid), Adam lr {hp.lr}, batch {hp.batch_size}, {hp.epochs} epochs, "
             f"{hp.trials} trials per cell, data variant `{hp.variant}`, reset `{hp.reset}` unless the "
             f"condition says `@method`. Error = validation error at the epoch of minimum validation loss; "
             f"epochs = first epoch with validation accuracy ≥ {c0:g} (median over the trials that reach "
             f"it); success = fraction of trials that reach it.", "",
             "Per-trial measures: [xor5d_per_trial.csv](xor5d_per_trial.csv); summary: "
             "[xor5d_summary.csv](xor5d_summary.csv).", ""]

    def fig(name, title):
        lines.extend([f"![{title}]({name}.png)", "", f"{title} — data: [{name}.csv]({name}.csv)", ""])

    base = pt[~pt["condition"].str.contains("@")] if pt["condition"].str.contains("@").any() else pt
    at_w = base[base["width"] == main_w]
    if len(ns) > 1 and len(at_w):
        F.plot_band(at_w, "n", "error", outdir / "fig1b_error_vs_n", logx=True,
                    title=f"Fig. 1B: error at convergence (H={main_w})", xlabel="training samples n",
                    ylabel="validation error (median, 25-75%)")
        fig("fig1b_error_vs_n", f"Figure 1B — validation error at convergence vs n (H={main_w})")
        F.plot_epochs_to_cutoff(at_w, "n", c0, outdir / "fig1c_epochs_vs_n", logx=True,
                                title=f"Fig. 1C: epochs to {c0:g} (H={main_w})", xlabel="training samples n")
        fig("fig1c_epochs_vs_n", f"Figure 1C — epochs to {c0:g} validation accuracy vs n (H={main_w})")
        F.plot_success(at_w, "n", ecol, outdir / "fig1c_success_vs_n", logx=True,
                       title=f"Fig. 1C: success rate at {c0:g} (H={main_w})", xlabel="training samples n")
        fig("fig1c_success_vs_n", f"Figure 1C — success rate (reaching {c0:g}) vs n (H={main_w})")
    at_n = base[base["n"] == main_n]
    if len(ws) > 1 and len(at_n):
        theory = theory_curves(ws, hp.dim)
        F.plot_success(at_n, "width", ecol, outdir / "fig4a_success_vs_width", overlay=theory,
                       title=f"Fig. 4A: success rate at {c0:g} (n={main_n})", xlabel="hidden width H")
        fig("fig4a_success_vs_width", f"Figure 4A — success probability vs width (n={main_n}); dashed: theory")
        F.plot_epochs_to_cutoff(at_n, "width", c0, outdir / "fig4b_epochs_vs_width",
                                title=f"Fig. 4B: epochs to {c0:g} (n={main_n})", xlabel="hidden width H")
        fig("fig4b_epochs_vs_width", f"Figure 4B — epochs to {c0:g} vs width (n={main_n})")
        F.plot_band(at_n, "width", "error", outdir / "fig4c_error_vs_width",
                    title=f"Fig. 4C: error at convergence (n={main_n})", xlabel="hidden width H",
                    ylabel="validation error (median, 25-75%)")
        fig("fig4c_error_vs_width", f"Figure 4C — error at convergence vs width (n={main_n})")
        fr = base[base["condition"].str.startswith("frozen-rand")]
        if len(ns) > 1 and len(fr):
            F.plot_success(fr, "width", ecol, outdir / "fig4d_frozen_rand_success_by_n", by="n",
                           overlay=theory, title="Frozen RAND: success rate vs width, per n",
                           xlabel="hidden width H")
            fig("fig4d_frozen_rand_success_by_n", "Figure 4 (all sample sizes) — frozen-rand success vs width, one line per n")
    resets = pt[pt["condition"].str.startswith("frozen")]
    if resets["condition"].str.contains("@").any():
        rw = resets[resets["width"] == main_w]
        if len(ns) > 1:
            F.plot_band(rw, "n", "error", outdir / "c1_error_vs_n", logx=True, xlabel="training samples n",
                        title="C.1: reset methods, error at convergence", ylabel="validation error (median, 25-75%)")
            fig("c1_error_vs_n", "Figure C.1 — reset methods side by side: error at convergence vs n")
            F.plot_epochs_to_cutoff(rw, "n", c0, outdir / "c1_epochs_vs_n", logx=True, xlabel="training samples n",
                                    title=f"C.1: reset methods, epochs to {c0:g}")
            fig("c1_epochs_vs_n", f"Figure C.1 — reset methods side by side: epochs to {c0:g} vs n")
        else:
            F.plot_band(rw, "width", "error", outdir / "c1_error_vs_width", xlabel="hidden width H",
                        title="C.1: reset methods, error at convergence")
            fig("c1_error_vs_width", "Figure C.1 — reset methods side by side: error")
    sw = [c for c in ("switch/fc1.weight", "switch/fc2.weight") if c in epochs.columns]
    if sw:
        fl = epochs[(epochs["condition"] == "fluid-rand") & (epochs["width"] == main_w) & (epochs["epoch"] <= 50)]
        fl = fl[fl[sw[0]].notna()] if len(fl) else fl
        if len(fl):
            long = fl.melt(id_vars=["epoch"], value_vars=sw, var_name="layer", value_name="switch")
            F.plot_band(long, "epoch", "switch", outdir / "switch_fluid_rand", by="layer",
                        title=f"fluid-rand: sign switches per epoch (H={main_w})",
                        ylabel="sign-switch fraction (median, 25-75%)")
            fig("switch_fluid_rand", "Polarity dynamics — fluid-rand sign-switch fraction per epoch (all n)")
    lines += [f"### Results (cells: error median [25%, 75%] / epochs to {c0:g} / success)", ""]
    if len(ns) > 1 or len(ws) == 1:
        lines += [f"At H = {main_w}:", ""] + _pivot_table(summ[summ["width"] == main_w], "n", conds, c0) + [""]
    if len(ws) > 1:
        lines += [f"At n = {main_n}:", ""] + _pivot_table(summ[summ["n"] == main_n], "width", conds, c0) + [""]
    if len(cutoffs) > 1:
        cols = ["condition", "n", "width"] + [f"success_{c:g}" for c in cutoffs]
        lines += ["Success rate at every cut-off:", "",
                  F.markdown_table(summ[(summ["width"] == main_w) | (summ["n"] == main_n)], columns=cols), ""]
    return "\n".join(lines)


__all__ = ["xor_report", "theory_curves"]
