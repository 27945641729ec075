"""Print the README's result tables from finished run directories (no numbers typed by hand).

    .venv/bin/python scripts/readme_tables.py runs/xor5d-fig1 runs/xor5d-fig4 runs/fmnist-transfer runs/cifar10-transfer runs/control-transfer
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ORDER = ["frozen-sufficient", "frozen-rand", "fluid-rand", "fluid-sufficient", "frozen-polarity",
         "fluid-polarity", "frozen-weight", "fluid-weight"]


def _cell_xor(r, cut="0.9"):
    return f"{r['error_median']:.3f} / {r[f'success_{cut}']:.2f}"


def xor_fig1(d: Path) -> str:
    s = pd.read_csv(d / "report" / "xor5d_summary.csv")
    conds = [c for c in ORDER if c in set(s.condition)]
    lines = ["| n | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|"]
    for n, g in s.groupby("n"):
        row = {r["condition"]: _cell_xor(r) for _, r in g.iterrows()}
        lines.append(f"| {n} | " + " | ".join(row[c] for c in conds) + " |")
    return "\n".join(lines)


def xor_fig4(d: Path, n: int = 500) -> str:
    from polarity.theory import exact_probability, reference_probability

    s = pd.read_csv(d / "report" / "xor5d_summary.csv")
    s = s[s.n == n]
    conds = [c for c in ORDER if c in set(s.condition)]
    lines = ["| H | reference P(H) | exact P(H) (xor5d) | " + " | ".join(f"{c} success" for c in conds)
             + " | frozen-rand error |", "|---" * (len(conds) + 4) + "|"]
    for w, g in s.groupby("width"):
        row = {r["condition"]: r for _, r in g.iterrows()}
        p = exact_probability(int(w), variant="xor5d")[0]
        lines.append(f"| {w} | {reference_probability(int(w)):.3f} | {p:.3f} | "
                     + " | ".join(f"{row[c]['success_0.9']:.2f}" for c in conds)
                     + f" | {row['frozen-rand']['error_median']:.3f} |")
    return "\n".join(lines)


def images(d: Path, reference: str = "frozen-polarity") -> str:
    """Median error per (n, condition), and for every other condition its paired difference
    from the reference (median over trials [bootstrap 95% CI], Wilcoxon-Holm stars)."""
    s = pd.read_csv(d / "report" / "images_summary.csv")
    pv = pd.read_csv(d / "report" / "pvalues_images.csv")
    pv = pv[pv.metric == "error"].set_index(["n", "condition"])
    conds = [reference] + [c for c in ORDER if c in set(s.condition) and c != reference]
    lines = ["| n | " + " | ".join(f"{c}{' (reference)' if c == reference else ''}" for c in conds) + " |",
             "|---" * (len(conds) + 1) + "|"]
    for n, g in s.groupby("n"):
        row = {r.condition: r for _, r in g.iterrows()}
        cells = []
        for c in conds:
            cell = f"{row[c]['error_median']:.3f}"
            if c != reference and (n, c) in pv.index:
                r = pv.loc[(n, c)]
                cell += (f" ({r.median_diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                         f"{' ' + r.stars if isinstance(r.stars, str) and r.stars else ''})")
            cells.append(cell)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    sig = pv[pv["reject"].astype(bool)]
    better = sig[sig.median_diff < 0]
    worse = sig[sig.median_diff > 0]
    note = (f"Paired (Wilcoxon signed-rank, Holm over {len(pv)} error comparisons): "
            f"{len(better)} conditions significantly *below* {reference}'s error "
            f"({', '.join(f'{c} n={n}' for n, c in better.index) or 'none'}), "
            f"{len(worse)} significantly above it "
            f"({', '.join(f'{c} n={n}' for n, c in worse.index) or 'none'}).")
    return "\n".join(lines) + "\n\n" + note


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        d = Path(arg)
        print(f"### {d}\n")
        if "fig1" in d.name:
            print(xor_fig1(d))
        elif "fig4" in d.name:
            print(xor_fig4(d))
        else:
            print(images(d))
        print()
