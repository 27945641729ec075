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
                                 "reference_count", "U", "p", "p_holm", "reject", "stars", "family"]
    assert len(tab) == 4 and (tab["family"] == "table").all() and set(tab["condition"]) == {"fluid-rand", "frozen-rand"}
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


# ----------------------------------------------------------------------------- paired analysis


from polarity.analysis.stats import paired_difference, paired_to_reference  # noqa: E402


def test_paired_difference_hand_computed():
    # six positive differences: the exact two-sided signed-rank p is 2 / 2**6
    r = paired_difference([1, 2, 3, 4, 5, 6], [0] * 6)
    assert r.median == 3.5 and r.n == 6 and r.n_higher == 6 and r.n_lower == 0
    assert r.p == pytest.approx(2 / 64)
    assert 1 <= r.ci_low <= 3.5 <= r.ci_high <= 6
    # one arm lost in 12 of 12 trials: p = 2 / 2**12
    r = paired_difference(np.arange(12) + 0.5, np.zeros(12))
    assert r.p == pytest.approx(2 / 4096)


def test_paired_difference_ties_zeros_and_failures():
    assert paired_difference([1, 2], [1, 2]).p == 1.0            # every difference is 0
    assert np.isnan(paired_difference([], []).median)
    # nan_policy="inf": a failed trial is slower than any finished one; two failures tie
    r = paired_difference([5, np.nan, np.nan, 3], [7, 4, np.nan, 3], nan_policy="inf")
    assert (r.n, r.n_lower, r.n_higher) == (4, 1, 1)
    # infinite differences: a median between -inf and +inf is undefined (NaN, not the lower
    # value, which would favour one side); the interval's bounds are order statistics
    r = paired_difference([np.nan, 5, np.nan, 9], [3, np.nan, 4, np.nan], nan_policy="inf")
    assert np.isnan(r.median) and r.ci_low == -np.inf and r.ci_high == np.inf and r.n == 4
    assert (r.reached_a, r.reached_b) == (2, 2)
    r = paired_difference([1, np.nan, 3], [2, 2, np.nan], nan_policy="omit")
    assert (r.n, r.median) == (1, -1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1, 2], [1])


@settings(max_examples=40, deadline=None)
@given(d=st.lists(st.floats(-10, 10, allow_nan=False).filter(lambda v: abs(v) > 1e-6),
                  min_size=3, max_size=25),
       seed=st.integers(0, 100))
def test_paired_difference_agrees_with_scipy_and_numpy(d, seed):
    from scipy.stats import wilcoxon

    b = np.linspace(0, 1, len(d))
    a = b + np.asarray(d)
    r = paired_difference(a, b, seed=seed, n_boot=500)
    dd = a - b
    assert r.median == pytest.approx(float(np.median(dd)))
    if len(np.unique(np.round(np.abs(dd), 12))) == len(dd):   # no ties: the ordinary exact test
        assert r.p == pytest.approx(float(wilcoxon(dd).pvalue))
    assert (r.reached_a, r.reached_b) == (len(d), len(d))
    assert dd.min() - 1e-9 <= r.ci_low <= r.ci_high <= dd.max() + 1e-9
    assert paired_difference(a, b, seed=seed, n_boot=500) == r     # seeded: repeatable


def test_paired_to_reference_pairs_by_trial_and_corrects_the_whole_table():
    rows = []
    for n in (100, 250):
        for t in range(8):
            # trials differ far more than conditions do: the situation pairing is for
            rows.append({"n": n, "trial": t, "condition": "ref", "error": 0.20 + 0.05 * t})
            rows.append({"n": n, "trial": t, "condition": "worse", "error": 0.21 + 0.05 * t + 0.001 * t})
            if t != 3:   # a missing trial is left out of the pairs
                rows.append({"n": n, "trial": t, "condition": "same", "error": 0.20 + 0.05 * t + (-1) ** t * 1e-3})
    frame = pd.DataFrame(rows)
    out = paired_to_reference(frame.sample(frac=1, random_state=0), "error", reference="ref", n_boot=1000)
    assert list(out["n"]) == [100, 100, 250, 250]
    assert list(out.columns[-7:]) == ["reached", "reference_reached", "p", "p_holm", "reject",
                                      "stars", "family"]
    worse = out[out.condition == "worse"].iloc[0]
    assert worse.n_pairs == 8 and worse.n_higher == 8 and worse.median_diff > 0.01
    assert worse.p == pytest.approx(2 / 256)
    same = out[out.condition == "same"].iloc[0]
    assert same.n_pairs == 7 and same.ci_low < 0 < same.ci_high
    adj, _ = holm(out["p"].to_numpy())
    np.testing.assert_allclose(out["p_holm"], adj)
    # pairing matters: the unpaired test cannot separate "worse" at this spread, the paired one can
    mw = compare_to_reference(frame, "error", reference="ref")
    assert float(mw[mw.condition == "worse"]["p"].iloc[0]) > 0.5 > 0.01 > worse.p


# ----------------------------------------------------------------------------- ties and zeros

from itertools import product  # noqa: E402

from scipy.stats import PermutationMethod, rankdata, wilcoxon  # noqa: E402

from polarity.analysis.stats import (family_caption, paper_comparison,  # noqa: E402
                                     signed_rank)


def _enumerated_p(d):
    """Independent reference: every sign assignment of the non-zero differences, Pratt ranks."""
    d = np.asarray(d, dtype=float)
    r = rankdata(np.abs(d))[d != 0]
    if r.size == 0:
        return 1.0
    signs = np.array(list(product((0, 1), repeat=r.size)))
    t = signs @ r
    obs = r[d[d != 0] > 0].sum()
    mu = r.sum() / 2
    return float(np.mean(np.abs(t - mu) >= abs(obs - mu) - 1e-9))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-4, 4), min_size=1, max_size=12))
def test_signed_rank_exact_with_ties_and_zeros(ints):
    # small integer differences: ties and zeros everywhere, as with errors in steps of 1/val_size
    d = np.asarray(ints, dtype=float) / 1000
    r = signed_rank(d)
    assert r.p == pytest.approx(_enumerated_p(d), abs=1e-12)
    assert r.statistic == pytest.approx(float(rankdata(np.abs(d))[d > 0].sum()))


@pytest.mark.parametrize("ints", [[1, 1, 2, 0, -1, 3, 3, 0], [2, 2, 2, -2, 1, 0, 0, 0, -1, 4]])
def test_signed_rank_matches_scipys_exhaustive_permutation_test(ints):
    d = np.asarray(ints, dtype=float)
    ref = wilcoxon(d, zero_method="pratt", method=PermutationMethod(n_resamples=5000))
    assert signed_rank(d).p == pytest.approx(float(ref.pvalue), abs=1e-12)


def test_signed_rank_where_the_old_p_was_wrong():
    # 16 trials, errors in steps of 1/1000: 12 trials one image better, 4 one image worse -- every
    # |d| tied.  The old code (scipy's default method) called it significant; it is not
    d = np.array([1] * 12 + [-1] * 4) / 1000
    new = signed_rank(d).p
    old = float(wilcoxon(d[d != 0], zero_method="wilcox", alternative="two-sided").pvalue)
    assert new == pytest.approx(_enumerated_p(d), abs=1e-12) == pytest.approx(2 * 2517 / 2 ** 16)
    assert old < 0.05 < new
    # the same tie between two arms' errors, as the report sees it: floats in steps of 1/1000,
    # whose differences (0.301 - 0.299, 0.205 - 0.203) differ in the last bits
    base = np.array([0.299, 0.203] * 8)
    arm = np.array([0.301, 0.205] * 6 + [0.297, 0.201] * 2)       # 12 pairs +2 images, 4 pairs -2
    assert len(np.unique(np.abs(arm - base))) > 1                  # float rounding splits the tie
    assert paired_difference(arm, base).p == pytest.approx(2 * 2517 / 2 ** 16, abs=1e-12)
    # zeros take part in the ranking (Pratt), where the old code dropped them
    z = np.array([1] * 6 + [2] * 2 + [-1] + [0] * 6 + [-3]) / 1000
    assert signed_rank(z).p == pytest.approx(_enumerated_p(z), abs=1e-12)
    # through paired_difference too, from the two arms' errors
    b = np.full(16, 0.2)
    assert paired_difference(b + d, b).p == pytest.approx(new, abs=1e-12)
    # no ties, no zeros: the ordinary exact test, as scipy computes it
    e = np.array([0.5, -1.5, 2.5, 3.5, 4.5, -5.5, 6.5, 7.5])
    assert signed_rank(e).p == pytest.approx(float(wilcoxon(e, method="exact").pvalue), abs=1e-12)
    assert signed_rank(np.zeros(5)).p == 1.0
    with pytest.raises(ValueError, match="finite"):
        signed_rank([1.0, np.inf])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-6, 6), min_size=8, max_size=60))
def test_signed_rank_normal_approximation_matches_scipy(ints):
    d = np.asarray(ints, dtype=float)
    if not (d != 0).any():
        return
    r = signed_rank(d, exact_max=0)
    ref = wilcoxon(d, zero_method="pratt", method="asymptotic", correction=False)
    assert r.method == "normal" and r.p == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-12)


def test_median_with_failures_never_hides_them():
    # reference reaches the cut-off in 12 of 12 trials, the condition in 6: the paired median
    # must not be 0 (the old lower-middle rule gave 0 here), and the counts say why
    cond = np.r_[np.full(6, 3.0), np.full(6, np.nan)]
    ref = np.full(12, 3.0)
    r = paired_difference(cond, ref, nan_policy="inf", n_boot=2000)
    assert r.median == np.inf and (r.reached_a, r.reached_b) == (6, 12)
    assert r.ci_high == np.inf and r.ci_low == 0
    # more than half failed on both sides, in the same trials: a tie (0), and both counts low
    r = paired_difference([np.nan] * 7 + [2] * 5, [np.nan] * 7 + [4] * 5, nan_policy="inf")
    assert r.median == 0 and (r.reached_a, r.reached_b) == (5, 5) and r.n_lower == 5
    # a failure is worse than every success: ranked above the largest finite difference
    r = paired_difference([1, 1, 1, 1, 1, np.nan], [2, 2, 2, 2, 2, 2], nan_policy="inf")
    assert r.p == pytest.approx(_enumerated_p([-1, -1, -1, -1, -1, 3]))


def test_holm_families_table_and_group():
    df = _frame(np.random.default_rng(3))
    ours = compare_to_reference(df, "epochs_to_0.8")
    paper = paper_comparison(df, "epochs_to_0.8")
    assert (paper["family"] == "group").all() and (ours["family"] == "table").all()
    # the paper's family: Holm within each n; failures omitted (4 of fluid-rand's 10 trials)
    for n, g in paper.groupby("n"):
        _, ref_adj, _, _ = _multipletests(g["p"], method="holm")
        np.testing.assert_allclose(g["p_holm"], ref_adj)
    assert (paper[paper.condition == "fluid-rand"]["count"] == 6).all()
    _, ref_adj, _, _ = _multipletests(ours["p"], method="holm")
    np.testing.assert_allclose(ours["p_holm"], ref_adj)
    paired = paired_to_reference(df, "error", family="group", n_boot=200)
    for n, g in paired.groupby("n"):
        np.testing.assert_allclose(g["p_holm"], holm(g["p"].to_numpy())[0])
    assert "paper" in family_caption(paper) and "within each n" in family_caption(paper)
    assert "ours" in family_caption(ours, "Mann-Whitney U") and "Mann-Whitney U" in family_caption(ours, "Mann-Whitney U")
    with pytest.raises(ValueError, match="mixes"):
        family_caption(pd.concat([ours, paper]))
    with pytest.raises(ValueError, match="Holm family"):
        compare_to_reference(df, "error", family="paper")


def test_paired_cell_formats_counts_and_infinities():
    from polarity.analysis.tables import fmt, paired_cell

    row = {"median_diff": 3.0, "ci_low": -1.0, "ci_high": 8.0, "n_pairs": 12, "reached": 12,
           "reference_reached": 6}
    assert paired_cell(row) == "+3 [-1, +8] (reached 12/12 vs 6/12)"
    assert paired_cell({**row, "reference_reached": 12}) == "+3 [-1, +8]"
    assert paired_cell({**row, "reference_reached": 12}, counts=True).endswith("(reached 12/12 vs 12/12)")
    assert paired_cell({**row, "median_diff": np.inf, "ci_high": np.inf}).startswith("+inf [-1, +inf]")
    assert (fmt(np.nan), fmt(None), fmt(-np.inf), fmt(0.012345)) == ("n/a", "n/a", "-inf", "0.0123")
    # a frame row straight from paired_to_reference
    df = _frame(np.random.default_rng(4))
    tab = paired_to_reference(df, "epochs_to_0.8", n_boot=200)
    fl = tab[tab.condition == "fluid-rand"].iloc[0]
    assert paired_cell(fl).endswith("(reached 6/10 vs 10/10)")
    # neither side reached the cut-off in any pair: no difference to show, not "+0 [+0, +0]"
    df.loc[df.condition.isin(["fluid-rand", "frozen-polarity"]), "epochs_to_0.8"] = np.nan
    tab = paired_to_reference(df, "epochs_to_0.8", n_boot=200)
    fl = tab[tab.condition == "fluid-rand"].iloc[0]
    assert paired_cell(fl) == "n/a (reached 0/10 vs 0/10)"
