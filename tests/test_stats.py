"""Holm-Bonferroni against statsmodels, Mann-Whitney NaN handling, the comparison table."""
from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import mannwhitneyu
from statsmodels.stats.multitest import multipletests

from polarity.analysis.stats import compare_to_reference, holm, mann_whitney, stars

pvals = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=40)
alphas = st.sampled_from([0.01, 0.05, 0.1, 0.2])


def _multipletests(p, **kw):
    # statsmodels calls gc.collect() on every call (~0.1-0.4 s with torch loaded): skip it here
    with mock.patch("gc.collect", return_value=0):
        return multipletests(p, **kw)


@settings(max_examples=200, deadline=None)
@given(pvals, alphas)
def test_holm_matches_statsmodels(p, alpha):
    adj, rej = holm(p, alpha=alpha)
    ref_rej, ref_adj, _, _ = _multipletests(p, alpha=alpha, method="holm")
    np.testing.assert_allclose(adj, ref_adj, rtol=1e-12, atol=0)
    assert np.array_equal(rej, ref_rej)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-6, 1.0), min_size=2, max_size=12), st.data())
def test_holm_ignores_nan(p, data):
    where = data.draw(st.integers(0, len(p)))
    with_nan = p[:where] + [math.nan] + p[where:]
    adj, rej = holm(with_nan)
    ref_adj, ref_rej = holm(p)
    assert math.isnan(adj[where]) and not rej[where]
    np.testing.assert_array_equal(np.delete(adj, where), ref_adj)
    np.testing.assert_array_equal(np.delete(rej, where), ref_rej)


def test_holm_errors_and_edges():
    adj, rej = holm([])
    assert adj.size == 0 and rej.size == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])
    with pytest.raises(ValueError, match="alpha"):
        holm([0.5], alpha=0)


def test_mann_whitney_matches_scipy_and_handles_nan():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 15), rng.normal(1, 1, 12)
    r = mann_whitney(a, b)
    ref = mannwhitneyu(a, b, alternative="two-sided")
    assert r.U == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
    # omit: NaN dropped
    r2 = mann_whitney(np.r_[a, np.nan], b)
    assert (r2.U, r2.p, r2.n_a) == (r.U, r.p, 15)
    # inf: a never-reached cut-off is slower than every success
    fast = [3, 4, 5, 4, 3, 5, 4, 3]
    never = [np.nan] * 8
    slow = mann_whitney(fast, never, nan_policy="inf")
    assert slow.U == 0 and slow.p < 0.001 and slow.n_b == 8
    assert math.isnan(mann_whitney(fast, never, nan_policy="omit").p)  # nothing left to compare
    assert mann_whitney([np.nan] * 3, [np.nan] * 4, nan_policy="inf").p == 1.0
    empty = mann_whitney([], [1.0, 2.0])
    assert math.isnan(empty.U) and math.isnan(empty.p) and empty.n_a == 0
    with pytest.raises(ValueError, match="nan_policy"):
        mann_whitney([1.0], [2.0], nan_policy="zero")


def test_stars():
    assert [stars(p) for p in (0.0005, 0.001, 0.005, 0.02, 0.05, 0.5, math.nan, None)] == \
        ["***", "**", "**", "*", "", "", "", ""]


def _frame(rng):
    rows = []
    for n in (100, 500):
        for cond, shift in (("frozen-polarity", 0.0), ("fluid-rand", 0.3), ("frozen-rand", 0.0)):
            for t in range(10):
                err = rng.normal(0.5 - 0.0002 * n + shift, 0.02)
                ep = rng.integers(3, 8) + (10 if shift else 0)
                if cond == "fluid-rand" and t < 4:
                    ep = np.nan  # never reached the cut-off
                rows.append({"condition": cond, "n": n, "trial": t, "error": err, "epochs_to_0.8": ep})
    return pd.DataFrame(rows)


def test_compare_to_reference_table():
    df = _frame(np.random.default_rng(1))
    tab = compare_to_reference(df, "error", reference="frozen-polarity", by="n")
    assert list(tab.columns) == ["n", "condition", "reference", "median", "reference_median", "count",
                                 "reference_count", "U", "p", "p_holm", "reject", "stars"]
    assert len(tab) == 4 and set(tab["condition"]) == {"fluid-rand", "frozen-rand"}
    # raw p-values are scipy's; Holm is applied across all four comparisons
    for _, row in tab.iterrows():
        g = df[df.n == row.n]
        ref = mannwhitneyu(g[g.condition == row.condition]["error"], g[g.condition == "frozen-polarity"]["error"])
        assert row.p == pytest.approx(ref.pvalue) and row.U == ref.statistic
        assert row["median"] == pytest.approx(np.median(g[g.condition == row.condition]["error"]))
    _, ref_adj, _, _ = _multipletests(tab["p"], method="holm")
    np.testing.assert_allclose(tab["p_holm"], ref_adj)
    fluid = tab[tab.condition == "fluid-rand"]
    assert fluid["reject"].all() and (fluid["stars"] == "***").all()
    assert not tab[tab.condition == "frozen-rand"]["reject"].any()
    # epochs to the cut-off: failures count as slower than any success (NaN -> inf)
    ep = compare_to_reference(df, "epochs_to_0.8")
    fl = ep[ep.condition == "fluid-rand"]
    assert (fl["count"] == 10).all() and fl["reject"].all()
    omit = compare_to_reference(df, "epochs_to_0.8", nan_policy="omit")
    assert (omit[omit.condition == "fluid-rand"]["count"] == 6).all()


def test_compare_to_reference_errors_and_missing_groups():
    df = _frame(np.random.default_rng(2))
    with pytest.raises(ValueError, match="reference condition 'frozen-in-polarity'"):
        compare_to_reference(df, "error", reference="frozen-in-polarity")
    with pytest.raises(ValueError, match="no column 'accuracy'"):
        compare_to_reference(df, "accuracy")
    # a group without the reference: rows with NaN p, left out of the Holm family
    part = df[~((df.n == 500) & (df.condition == "frozen-polarity"))]
    tab = compare_to_reference(part, "error")
    assert tab[tab.n == 500]["p"].isna().all() and not tab[tab.n == 500]["reject"].any()
    _, ref_adj, _, _ = _multipletests(tab[tab.n == 100]["p"], method="holm")
    np.testing.assert_allclose(tab[tab.n == 100]["p_holm"], ref_adj)
    # several grouping columns
    df["width"] = 1
    assert list(compare_to_reference(df, "error", by=["n", "width"]).columns[:2]) == ["n", "width"]
