"""Print the README's result tables from finished run directories (no numbers typed by hand).

    .venv/bin/python scripts/readme_tables.py runs/xor5d-fig1 runs/xor5d-fig4 runs/fmnist-quick runs/cifar10-quick
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


def images(d: Path) -> str:
    s = pd.read_csv(d / "report" / "images_summary.csv")
    conds = [c for c in ORDER if c in set(s.condition)]
    lines = ["| n | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|"]
    for n, g in s.groupby("n"):
        row = {r.condition: r for _, r in g.iterrows()}
        lines.append(f"| {n} | " + " | ".join(f"{row[c]['error_median']:.3f}" for c in conds) + " |")
    pv = pd.read_csv(d / "report" / "pvalues_images.csv")
    sig = pv[pv["reject"].astype(bool)]
    note = (f"{len(sig)} of {len(pv)} comparisons against frozen-polarity significant after Holm"
            + (": " + "; ".join(f"{r.metric} n={r.n} {r.condition} (p_holm={r.p_holm:.3g})"
                                for r in sig.itertuples()) if len(sig) else ""))
    return "\n".join(lines) + ("\n\n" + note if note else "")


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
