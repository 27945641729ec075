"""Print the README's result tables from finished run directories (no numbers typed by hand).

    .venv/bin/python scripts/readme_tables.py runs/xor5d-fig1 runs/xor5d-fig4 runs/fmnist-transfer runs/cifar10-transfer runs/control-transfer

Which table a directory gets is read from its ``spec.json`` (the experiment, its preset and
hyper-parameters), never from the directory's name: an XOR-5D run over several widths gets the
width table (Figure 4), one over sample sizes at one width the sample-size table (Figure 1), an
image run (``fmnist``, ``cifar10``, ``images``) the paired tables.  Every comparison table is
printed with its Holm family and, for a cut-off, each side's success counts.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from polarity.analysis.tables import family_caption, fmt, paired_cell

ORDER = ["frozen-sufficient", "frozen-rand", "fluid-rand", "fluid-sufficient", "frozen-polarity",
         "fluid-polarity", "frozen-weight", "fluid-weight", "frozen-shuffled", "frozen-balanced",
         "frozen-oracle", "fluid-oracle"]
IMAGE_EXPERIMENTS = ("fmnist", "cifar10", "images")


def spec(d: Path) -> dict:
    """The run's ``spec.json`` (what ``polarity run`` wrote when it created the directory)."""
    f = Path(d) / "spec.json"
    if not f.exists():
        raise SystemExit(f"{d}: no spec.json -- not a run directory")
    return json.loads(f.read_text())


def kind(s: dict) -> str:
    """``xor-n`` | ``xor-widths`` | ``images`` from a run's spec; ``unknown`` otherwise."""
    exp, hp = s.get("experiment"), s.get("hparams", {})
    if exp == "xor5d":
        return "xor-widths" if len(hp.get("widths", ())) > 1 else "xor-n"
    if exp in IMAGE_EXPERIMENTS:
        return "images"
    return "unknown"


def _ordered(conds) -> list[str]:
    conds = set(conds)
    return [c for c in ORDER if c in conds] + sorted(conds - set(ORDER))


def _cell_xor(r, cut="0.9"):
    return f"{r['error_median']:.3f} / {r[f'success_{cut}']:.2f}"


def xor_fig1(d: Path) -> str:
    s = pd.read_csv(d / "report" / "xor5d_summary.csv")
    conds = _ordered(s.condition)
    lines = ["Cells: error median / success rate at 0.9.", "",
             "| n | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|"]
    for n, g in s.groupby("n"):
        row = {r["condition"]: _cell_xor(r) for _, r in g.iterrows()}
        lines.append(f"| {n} | " + " | ".join(row.get(c, "-") for c in conds) + " |")
    return "\n".join(lines)


def xor_fig4(d: Path, n: int = 500) -> str:
    from polarity.theory import exact_probability, reference_probability

    s = pd.read_csv(d / "report" / "xor5d_summary.csv")
    n = n if n in set(s.n) else int(s.n.max())
    s = s[s.n == n]
    conds = _ordered(s.condition)
    lines = [f"At n = {n}.", "",
             "| H | reference P(H) | exact P(H) (xor5d) | " + " | ".join(f"{c} success" for c in conds)
             + " | frozen-rand error |", "|---" * (len(conds) + 4) + "|"]
    for w, g in s.groupby("width"):
        row = {r["condition"]: r for _, r in g.iterrows()}
        p = exact_probability(int(w), variant="xor5d")[0]
        fr = f"{row['frozen-rand']['error_median']:.3f}" if "frozen-rand" in row else "-"
        lines.append(f"| {w} | {reference_probability(int(w)):.3f} | {p:.3f} | "
                     + " | ".join(f"{row[c]['success_0.9']:.2f}" if c in row else "-" for c in conds)
                     + f" | {fr} |")
    return "\n".join(lines)


def _significant(pv: pd.DataFrame, reference: str, what: str) -> str:
    sig = pv[pv["reject"].astype(bool)]
    diff = "median_diff" if "median_diff" in sig else "median"
    if diff == "median":   # unpaired: compare the condition's median with the reference's
        better = sig[sig["median"] < sig["reference_median"]]
        worse = sig[sig["median"] > sig["reference_median"]]
    else:
        better, worse = sig[sig[diff] < 0], sig[sig[diff] > 0]

    def names(f):
        return ", ".join(f"{r.condition} n={r.n}" for r in f.itertuples()) or "none"

    return (f"{what}: {len(better)} of {len(pv)} comparisons significantly *below* {reference} "
            f"({names(better)}), {len(worse)} significantly above it ({names(worse)}).")


def images(d: Path, reference: str = "frozen-polarity") -> str:
    """Median error per (n, condition) with each other condition's paired difference from the
    reference (median over trials [bootstrap 95% CI], Wilcoxon-Holm stars); the epochs to the
    run's cut-off likewise, with each side's success counts; the Holm family of each."""
    s = pd.read_csv(d / "report" / "images_summary.csv")
    pv_all = pd.read_csv(d / "report" / "pvalues_images.csv")
    cut = spec(d).get("hparams", {}).get("cutoff")
    conds = [reference] + [c for c in _ordered(s.condition) if c != reference]
    header = ["| n | " + " | ".join(f"{c}{' (reference)' if c == reference else ''}" for c in conds) + " |",
              "|---" * (len(conds) + 1) + "|"]
    out = []
    metrics = [("error", "Validation error: the median per condition; beside it the paired "
                         "difference from the reference", lambda r: f"{r['error_median']:.3f}")]
    if cut is not None and f"epochs_to_{cut:g}" in set(pv_all.metric):
        col = f"epochs_to_{cut:g}"
        metrics.append((col, f"Epochs to {cut:g}: the median per condition over the trials that "
                             f"reached it; beside it the paired difference from the "
                             f"reference, with how many pairs each side reached it in",
                        lambda r: fmt(r.get(f"{col}_median"), 3)))
    for metric, caption, own in metrics:
        pv = pv_all[pv_all.metric == metric].set_index(["n", "condition"])
        lines = [f"{caption}. {family_caption(pv.reset_index(), 'Wilcoxon signed-rank')}", "", *header]
        for n, g in s.groupby("n"):
            row = {r.condition: r for _, r in g.iterrows()}
            cells = []
            for c in conds:
                if c not in row:
                    cells.append("-")
                    continue
                cell = own(row[c])
                if c != reference and (n, c) in pv.index:
                    r = pv.loc[(n, c)]
                    stars = r["stars"] if isinstance(r["stars"], str) else ""
                    cell += f" ({paired_cell(r, counts=metric.startswith('epochs_to'))}{' ' + stars if stars else ''})"
                cells.append(cell)
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines += ["", _significant(pv.reset_index(), reference,
                                   f"Paired (Wilcoxon signed-rank, Holm over {len(pv)} comparisons)")]
        out.append("\n".join(lines))
    paper = d / "report" / "paper_mwu_images.csv"
    if paper.exists():
        pm = pd.read_csv(paper)
        pm = pm[pm.metric == "error"]
        out.append(f"The paper's test on the error (Mann-Whitney U, unpaired). {family_caption(pm)} "
                   + _significant(pm, reference, "Result"))
    return "\n\n".join(out)


def table(d: Path) -> str:
    s = spec(d)
    k = kind(s)
    hp = s.get("hparams", {})
    title = (f"### {d}: {s.get('experiment')} --preset {s.get('preset')}"
             + (f" (dataset {hp['dataset']}, source {hp.get('source')})" if "dataset" in hp else ""))
    if k == "xor-n":
        body = xor_fig1(d)
    elif k == "xor-widths":
        body = xor_fig4(d)
    elif k == "images":
        body = images(d)
    else:
        body = f"(no README table for experiment {s.get('experiment')!r}; see its report/)"
    return f"{title}\n\n{body}\n"


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(table(Path(arg)))
