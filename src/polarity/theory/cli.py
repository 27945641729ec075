"""``polarity theory ...``: the XOR representability table and the capacity-speed lemma demo.

    polarity theory xor [--widths 1-30] [--variant xor5d,xor5d-corners] [--method auto]
                        [--samples N] [--seed S] [--csv FILE] [--run DIR] [--cutoff 0.9] [--n 500]
    polarity theory lemma [--hidden 2] [--magnitudes 1,2] [--biases -2,-1,0,1,2]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ..cli_errors import error, unknown


def parse_widths(text: str) -> list[int]:
    """``"1-30"``, ``"2,4,8"`` or ``"1-10,16,32"`` -> sorted unique widths (>= 0)."""
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if lo > hi:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad width list {text!r}: use e.g. 1-30 or 2,4,8") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"bad width list {text!r}: widths must be integers >= 0")
    return sorted(out)


def _numbers(text: str) -> list[float]:
    try:
        return [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def empirical_success(run: str | Path, condition: str = "frozen-rand", n: int = 500,
                      cutoff: float = 0.9, experiment: str = "xor5d") -> dict[int, tuple[float, int]]:
    """Success rate (fraction of trials reaching ``cutoff`` validation accuracy) per width for
    ``condition`` at sample size ``n``, from a run directory's store or a tidy CSV export.
    Returns {width: (rate, trials)}; empty when the run has no such trials."""
    import pandas as pd

    from ..analysis.metrics import per_trial, success_rate, cutoff_column

    path = Path(run)
    if path.is_file() and path.suffix == ".csv":
        epochs = pd.read_csv(path)
    elif path.is_dir():
        from ..store import epochs_frame

        epochs = epochs_frame(path)
    else:
        raise FileNotFoundError(f"--run {run}: not a run directory or a tidy .csv export")
    if len(epochs) == 0:
        return {}
    sel = epochs
    if "experiment" in sel.columns:
        sel = sel[sel["experiment"] == experiment]
    sel = sel[(sel["condition"] == condition) & (sel["n"] == n)]
    if len(sel) == 0:
        return {}
    trials = per_trial(sel, cutoffs=(cutoff,))
    col = cutoff_column(cutoff)
    return {int(w): (success_rate(g[col].to_numpy()), len(g)) for w, g in trials.groupby("width")}


def _cmd_xor(args) -> int:
    from .probability import VARIANTS, exact_probability, get_variant
    from .reference import reference_probability

    names = [name.strip() for name in args.variant.split(",") if name.strip()]
    if not names:
        return error("theory xor: --variant is empty")
    for name in names:
        if name not in VARIANTS:
            return error(f"theory xor: --variant: {unknown('variant', name, list(VARIANTS))}")
    variants = [get_variant(name) for name in names]
    emp = {}
    if args.run:
        try:
            emp = empirical_success(args.run, n=args.n, cutoff=args.cutoff)
        except (FileNotFoundError, OSError, ValueError, KeyError) as e:
            return error(f"theory xor: cannot read --run {args.run}: {e}")
        if not emp:
            print(f"polarity theory xor: no frozen-rand trials at n={args.n} in {args.run}; "
                  "printing the theory columns only", file=sys.stderr)
    rows = []
    for w in args.widths:
        row = {"width": w, "reference": reference_probability(w, d=args.d)}
        for v in variants:
            try:
                p, lo, hi = exact_probability(w, v, method=args.method, samples=args.samples, seed=args.seed)
            except ValueError as e:
                return error(f"theory xor: {e}")
            row[v.name], row[f"{v.name}_lo"], row[f"{v.name}_hi"] = p, lo, hi
        if args.run:
            rate, n_trials = emp.get(w, (float("nan"), 0))
            row["empirical_frozen_rand"] = rate
            row["empirical_trials"] = n_trials
        rows.append(row)
    print(f"# reference: SPEC §7 formula (d={args.d}), P(>= 3 distinct useful sign patterns)")
    mc = {}
    for v in variants:
        mc[v.name] = any(r[f"{v.name}_lo"] != r[f"{v.name}_hi"] for r in rows)
        how = "Monte Carlo, 95% Wilson interval" if mc[v.name] else "exact enumeration"
        print(f"# {v.name}: {v.description}; {how}")
    head = f"{'width':>5}  {'reference':>9}"
    for v in variants:
        head += f"  {v.name:>13}" + (f"  {'95% CI':<16}" if mc[v.name] else "")
    if args.run:
        head += f"  {'frozen-rand':>11}  {'trials':>6}"
    print(head)
    for r in rows:
        line = f"{r['width']:>5}  {r['reference']:>9.4f}"
        for v in variants:
            line += f"  {r[v.name]:>13.4f}"
            if mc[v.name]:
                line += f"  [{r[f'{v.name}_lo']:.3f}, {r[f'{v.name}_hi']:.3f}]"
        if args.run:
            line += f"  {r['empirical_frozen_rand']:>11.3f}  {r['empirical_trials']:>6}"
        print(line)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
            wr.writeheader()
            wr.writerows(rows)
        print(f"# wrote {args.csv}")
    return 0


def _cmd_lemma(args) -> int:
    from .lemma import format_lemma, lemma_demo

    hidden = args.hidden
    w1 = [(1, 1), (-1, -1)] + [(1, -1), (-1, 1)] * hidden
    try:
        res = lemma_demo(hidden=hidden, magnitudes=args.magnitudes, biases=args.biases, w1_signs=w1[:hidden])
    except ValueError as e:
        return error(f"theory lemma: {e}")
    print(format_lemma(res))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``theory`` (with ``xor`` and ``lemma``) on an argparse subparsers object."""
    from .probability import VARIANTS

    fmt = argparse.RawDescriptionHelpFormatter
    t = subparsers.add_parser("theory", help="XOR representability of random polarity templates; Lemma 2.1 demo",
                              description=__doc__, formatter_class=fmt)
    tsub = t.add_subparsers(dest="theory_cmd", metavar="{xor,lemma}", required=True)
    variants = "\n".join(f"  {k:<14} {v.description}" for k, v in VARIANTS.items())
    x = tsub.add_parser("xor", help="P(a randomly-signed width-H net can represent XOR): reference vs exact",
                        formatter_class=fmt, epilog="variants:\n" + variants)
    x.add_argument("--widths", type=parse_widths, default=parse_widths("1-30"), help="e.g. 1-30 or 2,4,8 (default 1-30)")
    x.add_argument("--variant", default="xor5d,xor5d-corners",
                   help="network variant(s) for the exact column(s), comma-separated (default xor5d,xor5d-corners)")
    x.add_argument("--method", choices=("auto", "enumerate", "montecarlo"), default="auto")
    x.add_argument("--samples", type=int, default=20000, help="Monte Carlo templates per width (default 20000)")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--d", type=int, default=5, help="input dimension for the reference formula (default 5)")
    x.add_argument("--csv", help="also write the table as CSV")
    x.add_argument("--run", help="run directory (or tidy CSV export) with xor5d fig4 results")
    x.add_argument("--n", type=int, default=500, help="sample size of the empirical column (default 500)")
    x.add_argument("--cutoff", type=float, default=0.9, help="validation-accuracy cut-off for success (default 0.9)")
    x.set_defaults(func=_cmd_xor)
    le = tsub.add_parser("lemma", help="exhaustive-search counts with free signs vs a sufficient template")
    le.add_argument("--hidden", type=int, default=2)
    le.add_argument("--magnitudes", type=_numbers, default=[1.0, 2.0], help="weight magnitudes (default 1,2)")
    le.add_argument("--biases", type=_numbers, default=[-2.0, -1.0, 0.0, 1.0, 2.0], help="bias values (default -2..2)")
    le.set_defaults(func=_cmd_lemma)
    return t
