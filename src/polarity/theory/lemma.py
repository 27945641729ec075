"""The capacity-speed trade-off (paper Lemma 2.1, SPEC §7), demonstrated exactly.

Exhaustive search, in a fixed order, for a 2 -> H -> 1 ReLU net solving XOR on the corners, with
free signs and with a sufficient (and an insufficient) sign template: the size of each space,
where the first solution lies, and how many there are.  The set-up and the counts are described
in docs/theory.md ("Lemma 2.1").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["LemmaResult", "lemma_demo", "format_lemma"]

_X = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64)
_Y = np.array([1, -1, 1, -1], dtype=np.float64)


@dataclass
class LemmaResult:
    space: str
    candidates: int          # size of the search space
    first_solution: int | None  # 1-based position of the first solution (None: no solution)
    solutions: int
    expected_first_random_order: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _search(value_lists: Sequence[Sequence[float]], hidden: int, chunk: int = 1 << 16) -> tuple[int, int | None, int]:
    """Exhaustive search in product order, vectorised in chunks; returns (N, first, count)."""
    sizes = [len(v) for v in value_lists]
    total = int(np.prod(sizes))
    vals = [np.asarray(v, dtype=np.float64) for v in value_lists]
    first, count = None, 0
    for start in range(0, total, chunk):
        idx = np.arange(start, min(total, start + chunk))
        # mixed-radix digits, last parameter fastest (= itertools.product order)
        params = np.empty((idx.size, len(sizes)))
        rem = idx.copy()
        for p in range(len(sizes) - 1, -1, -1):
            params[:, p] = vals[p][rem % sizes[p]]
            rem //= sizes[p]
        h = hidden
        w1 = params[:, : 2 * h].reshape(-1, h, 2)
        w2 = params[:, 2 * h: 3 * h]
        b1 = params[:, 3 * h: 4 * h]
        b2 = params[:, 4 * h]
        hid = np.maximum(np.einsum("nhi,ki->nkh", w1, _X) + b1[:, None, :], 0.0)
        y = np.einsum("nkh,nh->nk", hid, w2) + b2[:, None]
        ok = np.all(y * _Y > 0, axis=1)
        c = int(ok.sum())
        if c and first is None:
            first = start + int(np.argmax(ok)) + 1
        count += c
    return total, first, count


def lemma_demo(hidden: int = 2, magnitudes: Sequence[float] = (1, 2), biases: Sequence[float] = (-2, -1, 0, 1, 2),
               w1_signs=((1, 1), (-1, -1)), insufficient: bool = True, max_candidates: int = 20_000_000) -> dict:
    """Search counts with free signs and with the sufficient template built from ``w1_signs``
    (output signs = products of each row's signs); with ``insufficient=True`` also a template with
    the output signs negated, which loses the target (zero solutions)."""
    if int(hidden) < 1:
        raise ValueError(f"hidden must be >= 1, got {hidden!r}")
    mags = sorted({abs(float(m)) for m in magnitudes})
    if not mags or 0.0 in mags:
        raise ValueError(f"magnitudes must be nonzero numbers, got {magnitudes!r}")
    w1s = np.sign(np.asarray(w1_signs, dtype=np.float64))
    if w1s.shape != (hidden, 2) or (w1s == 0).any():
        raise ValueError(f"w1_signs must be a {hidden}x2 matrix of +-1, got {np.asarray(w1_signs).tolist()}")
    bvals = sorted(float(b) for b in biases)
    signed = sorted([-m for m in mags] + mags)
    n_weights = 3 * hidden
    free_lists = [signed] * n_weights + [bvals] * (hidden + 1)
    out_signs = w1s[:, 0] * w1s[:, 1]

    def fixed(out):
        ws = list(w1s.reshape(-1)) + list(out)
        return [[s * m for m in mags] for s in ws] + [bvals] * (hidden + 1)

    n_free = int(np.prod([len(v) for v in free_lists], dtype=float))
    if n_free > max_candidates:
        raise ValueError(f"free-sign search space has {n_free} candidates (> max_candidates={max_candidates}); "
                         "use fewer hidden units, magnitudes or bias values")
    rows = []
    spaces = [("free signs", free_lists), ("sufficient template", fixed(out_signs))]
    if insufficient:
        spaces.append(("insufficient template (output signs negated)", fixed(-out_signs)))
    for name, lists in spaces:
        n, first, count = _search(lists, hidden)
        exp = (n + 1) / (count + 1) if count else None
        rows.append(LemmaResult(name, n, first, count, exp))
    free, suff = rows[0], rows[1]
    return {
        "hidden": hidden, "magnitudes": mags, "biases": bvals, "n_weights": n_weights,
        "w1_signs": w1s.astype(int).tolist(), "output_signs": out_signs.astype(int).tolist(),
        "rows": [r.as_dict() for r in rows],
        "space_reduction": free.candidates / suff.candidates,
        "expected_reduction": 2 ** n_weights,
        "first_solution_speedup": (free.first_solution / suff.first_solution
                                   if free.first_solution and suff.first_solution else None),
        "target_representable_with_template": suff.solutions > 0,
    }


def format_lemma(res: dict) -> str:
    lines = [f"Lemma 2.1 demo: 2-{res['hidden']}-1 ReLU net on XOR corners, weights in "
             f"+-{res['magnitudes']}, biases in {res['biases']} (never constrained); "
             f"{res['n_weights']} weights; sufficient template W1 signs {res['w1_signs']}, "
             f"output signs {res['output_signs']}",
             f"{'search space':<46}{'candidates':>12}{'1st solution at':>17}{'solutions':>11}"
             f"{'E[1st], random order':>22}"]
    for r in res["rows"]:
        first = "-" if r["first_solution"] is None else str(r["first_solution"])
        exp = "-" if r["expected_first_random_order"] is None else f"{r['expected_first_random_order']:.1f}"
        lines.append(f"{r['space']:<46}{r['candidates']:>12}{first:>17}{r['solutions']:>11}{exp:>22}")
    lines.append(f"space reduction: {res['space_reduction']:g} = 2^{res['n_weights']} "
                 f"(expected {res['expected_reduction']}); first solution found "
                 f"{res['first_solution_speedup'] or float('nan'):.1f}x sooner; target still representable: "
                 f"{res['target_representable_with_template']}")
    return "\n".join(lines)
