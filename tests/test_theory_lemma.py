"""polarity.theory.lemma: Lemma 2.1's exhaustive-search counts."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from polarity.theory import format_lemma, lemma_demo

X = [(1, 1), (1, -1), (-1, -1), (-1, 1)]
Y = [1, -1, 1, -1]


def _solves(p, h):
    w1 = np.array(p[:2 * h]).reshape(h, 2)
    w2 = np.array(p[2 * h:3 * h])
    b1 = np.array(p[3 * h:4 * h])
    b2 = p[4 * h]
    for x, y in zip(X, Y):
        out = float(np.maximum(w1 @ np.array(x) + b1, 0) @ w2 + b2)
        if out * y <= 0:
            return False
    return True


def test_lemma_counts_show_the_reduction():
    res = lemma_demo()
    free, suff, bad = res["rows"]
    assert res["n_weights"] == 6
    assert free["candidates"] == 4 ** 6 * 5 ** 3 and suff["candidates"] == 2 ** 6 * 5 ** 3
    assert res["space_reduction"] == 2 ** 6 == res["expected_reduction"]
    assert suff["solutions"] > 0 and res["target_representable_with_template"]
    assert bad["solutions"] == 0 and bad["first_solution"] is None
    assert suff["first_solution"] < free["first_solution"]
    assert suff["expected_first_random_order"] < free["expected_first_random_order"]
    # the template's solutions are exactly the free-sign solutions with those signs
    assert free["solutions"] >= suff["solutions"]
    text = format_lemma(res)
    assert "2^6" in text and "sufficient template" in text


def test_lemma_first_solution_matches_plain_loop():
    res = lemma_demo()
    suff = res["rows"][1]
    mags, bvals = res["magnitudes"], res["biases"]
    signs = [1, 1, -1, -1, 1, 1]  # W1 row-major, then output signs = products
    lists = [[s * m for m in mags] for s in signs] + [bvals] * 3
    first, count = None, 0
    for i, p in enumerate(itertools.product(*lists), start=1):
        if _solves(p, 2):
            count += 1
            if first is None:
                first = i
    assert (first, count) == (suff["first_solution"], suff["solutions"])


def test_lemma_bad_input():
    with pytest.raises(ValueError, match="w1_signs"):
        lemma_demo(w1_signs=[[1, 0], [1, 1]])
    with pytest.raises(ValueError, match="magnitudes"):
        lemma_demo(magnitudes=[0, 1])
    with pytest.raises(ValueError, match="max_candidates"):
        lemma_demo(hidden=3, w1_signs=[[1, 1], [-1, -1], [1, -1]])
