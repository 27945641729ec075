"""Significance tests of SPEC §6, each condition against a reference condition (Frozen
transferred polarity) within each sample size, Holm-Bonferroni across all the comparisons of a
table:

* the paper's test: two-sided Mann-Whitney U on the two groups of trials (``compare_to_reference``);
* the paired analysis (ours; SPEC §6 "paired design"): every condition of one trial shares its
  initialisation, data order and validation set, so the per-trial differences
  ``condition - reference`` are the unit of analysis: their median with a bootstrap
  percentile interval, and the two-sided Wilcoxon signed-rank test (``paired_to_reference``).

Missing values. A per-trial metric can be NaN in two different senses:

* ``epochs_to_<cutoff>`` is NaN when a trial never reached the cut-off. Dropping those trials
  would make a condition that rarely succeeds look fast, so for these metrics (``nan_policy=
  "inf"``, the default for column names starting with ``epochs_to``) a NaN counts as +inf:
  slower than every trial that succeeded, tied with every other failure. Medians are computed
  on the same values, so a median is ``inf`` when at least half the trials failed.
* any other metric (e.g. ``error``) is NaN only when something is missing; those trials are
  dropped (``nan_policy="omit"``).

A comparison with an empty group (after dropping) has no test: U and p are NaN, it is left out of
the Holm family and never rejected. Likewise NaN p-values passed to ``holm`` are left out of the
family (the number of hypotheses m counts only the finite ones).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["holm", "mann_whitney", "MannWhitney", "compare_to_reference", "stars", "NAN_POLICIES",
           "paired_difference", "Paired", "paired_to_reference"]

NAN_POLICIES = ("auto", "omit", "inf")


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down procedure. Returns ``(adjusted, reject)`` in the input order.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m): hypothesis (k) is rejected
    when p_(j) <= alpha / (m - j + 1) for every j <= k; the adjusted p-value is
    max_{j<=k} min(1, (m - j + 1) p_(j)). NaN inputs give NaN / False and are not counted in m.
    """
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[finite][(p[finite] < 0) | (p[finite] > 1)][:5]}")
    adjusted = np.full(p.shape, np.nan)
    reject = np.zeros(p.shape, dtype=bool)
    idx = np.flatnonzero(finite)
    m = idx.size
    if m == 0:
        return adjusted, reject
    order = idx[np.argsort(p[idx], kind="mergesort")]
    ps = p[order]
    factors = np.arange(m, 0, -1, dtype=float)  # m, m-1, ..., 1
    adj = np.minimum(np.maximum.accumulate(ps * factors), 1.0)
    fails = ps > alpha / factors
    first_fail = int(np.argmax(fails)) if fails.any() else m
    rej = np.arange(m) < first_fail
    adjusted[order] = adj
    reject[order] = rej
    return adjusted, reject


class MannWhitney(NamedTuple):
    U: float        # scipy's statistic: U of the first sample
    p: float        # two-sided p-value
    n_a: int        # sizes after NaN handling
    n_b: int


def _prepare(x, nan_policy: str) -> np.ndarray:
    v = np.asarray(x, dtype=float).reshape(-1)
    if nan_policy == "omit":
        return v[~np.isnan(v)]
    if nan_policy == "inf":
        return np.where(np.isnan(v), np.inf, v)
    raise ValueError(f"unknown nan_policy {nan_policy!r}; choose 'omit' or 'inf'")


def mann_whitney(a: Sequence[float], b: Sequence[float], nan_policy: str = "omit") -> MannWhitney:
    """Two-sided Mann-Whitney U test of ``a`` against ``b`` (``scipy.stats.mannwhitneyu``, its
    default method: exact for small samples without ties, else the normal approximation with tie
    and continuity corrections). ``nan_policy``: "omit" drops NaN, "inf" counts NaN as +inf (a
    trial that never reached the cut-off). An empty group gives U = p = NaN."""
    from scipy.stats import mannwhitneyu

    x, y = _prepare(a, nan_policy), _prepare(b, nan_policy)
    if x.size == 0 or y.size == 0:
        return MannWhitney(math.nan, math.nan, int(x.size), int(y.size))
    r = mannwhitneyu(x, y, alternative="two-sided")
    return MannWhitney(float(r.statistic), float(r.pvalue), int(x.size), int(y.size))


def stars(p: float) -> str:
    """"***" for p < 0.001, "**" for p < 0.01, "*" for p < 0.05, else "" (NaN included)."""
    if p is None or not isinstance(p, (int, float, np.floating, np.integer)) or np.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def compare_to_reference(per_trial_frame, metric: str, reference: str = "frozen-polarity",
                         by: str | Sequence[str] = "n", alpha: float = 0.05,
                         nan_policy: str = "auto", condition_col: str = "condition"):
    """Each condition against ``reference`` within every group of ``by`` (e.g. each sample size),
    two-sided Mann-Whitney U on ``metric``, Holm-Bonferroni across ALL comparisons in the table.

    Returns a DataFrame with the ``by`` columns and ``condition, reference, median,
    reference_median, count, reference_count, U, p, p_holm, reject, stars`` (stars from
    ``p_holm``), one row per (group, condition other than the reference). ``nan_policy="auto"``
    is "inf" for ``epochs_to*`` metrics and "omit" otherwise (see the module docstring)."""
    import pandas as pd

    df = per_trial_frame
    by_cols = [by] if isinstance(by, str) else list(by)
    policy, others = _check_frame(df, metric, reference, by_cols, nan_policy, condition_col)

    def median(v: np.ndarray) -> float:
        return float(np.median(v)) if v.size else math.nan

    rows = []
    for key, g in df.groupby(by_cols, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ref_vals = _prepare(g.loc[g[condition_col] == reference, metric].to_numpy(), policy)
        for cond in others:
            vals = _prepare(g.loc[g[condition_col] == cond, metric].to_numpy(), policy)
            if vals.size == 0 and not (g[condition_col] == cond).any():
                continue  # condition not run in this group
            r = mann_whitney(vals, ref_vals, nan_policy=policy)
            rows.append({**dict(zip(by_cols, key)), "condition": cond, "reference": reference,
                         "median": median(vals), "reference_median": median(ref_vals),
                         "count": r.n_a, "reference_count": r.n_b, "U": r.U, "p": r.p})
    columns = by_cols + ["condition", "reference", "median", "reference_median", "count",
                         "reference_count", "U", "p", "p_holm", "reject", "stars"]
    out = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "reject", "stars")])
    return _with_holm(out, alpha)[columns]


def _check_frame(df, metric, reference, by_cols, nan_policy, condition_col):
    """Validate a per-trial frame for a comparison table; returns (nan policy, other conditions)."""
    for col in by_cols + [condition_col, metric]:
        if col not in df.columns:
            raise ValueError(f"the per-trial frame has no column {col!r}; it has {list(df.columns)}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"unknown nan_policy {nan_policy!r}; choose one of {NAN_POLICIES}")
    policy = ("inf" if metric.startswith("epochs_to") else "omit") if nan_policy == "auto" else nan_policy
    conditions = list(dict.fromkeys(df[condition_col]))
    if reference not in conditions:
        raise ValueError(f"reference condition {reference!r} is not in the frame; conditions: {conditions}")
    return policy, [c for c in conditions if c != reference]


def _with_holm(out, alpha: float):
    """Add ``p_holm``, ``reject`` and ``stars`` (of ``p_holm``) over the whole table."""
    adjusted, reject = (holm(out["p"].to_numpy(dtype=float), alpha=alpha) if len(out)
                        else (np.array([]), np.array([], dtype=bool)))
    out["p_holm"] = adjusted
    out["reject"] = reject.astype(bool)
    out["stars"] = [stars(p) for p in adjusted]
    return out


# ----------------------------------------------------------------------------- paired analysis

class Paired(NamedTuple):
    median: float   # median of the paired differences a - b
    ci_low: float   # bootstrap percentile interval of that median
    ci_high: float
    p: float        # two-sided Wilcoxon signed-rank p-value (1.0 when every difference is 0)
    n: int          # pairs after NaN handling
    n_lower: int    # pairs with a < b (for errors and epochs: a did better)
    n_higher: int   # pairs with a > b


def _differences(a: np.ndarray, b: np.ndarray, nan_policy: str) -> np.ndarray:
    x, y = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal lengths, got {x.size} and {y.size}")
    if nan_policy == "omit":
        keep = ~(np.isnan(x) | np.isnan(y))
        return x[keep] - y[keep]
    if nan_policy == "inf":  # a trial that never reached the cut-off is slower than any that did
        x, y = np.where(np.isnan(x), np.inf, x), np.where(np.isnan(y), np.inf, y)
        with np.errstate(invalid="ignore"):
            d = x - y
        return np.where(np.isinf(x) & np.isinf(y), 0.0, d)   # both failed: a tie
    raise ValueError(f"unknown nan_policy {nan_policy!r}; choose 'omit' or 'inf'")


def paired_difference(a: Sequence[float], b: Sequence[float], nan_policy: str = "omit",
                      confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> Paired:
    """The paired comparison of ``a`` with ``b`` (``a[i]`` and ``b[i]`` from one trial).

    The median of ``d = a - b`` with a bootstrap percentile interval (``n_boot`` resamples of the
    pairs, a fixed ``seed``: the same data give the same interval), and the two-sided Wilcoxon
    signed-rank test (``scipy.stats.wilcoxon``, zero differences dropped, exact for small samples
    without ties).  With ``nan_policy="inf"`` a NaN (never reached the cut-off) is +inf: the
    difference is +-inf, ranked beyond every finite one, and 0 when both failed; medians of
    differences that include an infinity are the lower middle value.  No pairs: NaN."""
    from scipy.stats import wilcoxon

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = _differences(a, b, nan_policy)
    n = int(d.size)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, math.nan, 0, 0, 0)
    # with infinite differences (a trial that never reached the cut-off) a median averaging an
    # infinity with another value is meaningless: take the lower middle value instead
    method = "linear" if np.isfinite(d).all() else "lower"
    rng = np.random.default_rng(seed)
    boot = np.quantile(d[rng.integers(0, n, size=(int(n_boot), n))], 0.5, axis=1, method=method)
    boot.sort()
    q = (1 - confidence) / 2
    lo, hi = boot[int(math.floor(q * len(boot)))], boot[int(math.ceil((1 - q) * len(boot))) - 1]
    nz = d[d != 0]
    if nz.size == 0:
        p = 1.0
    else:
        finite = np.abs(nz[np.isfinite(nz)])
        big = (finite.max() if finite.size else 1.0) * 2 + 1   # ranks of +-inf: beyond all others
        p = float(wilcoxon(np.clip(nz, -big, big), zero_method="wilcox",
                           alternative="two-sided").pvalue)
    return Paired(float(np.quantile(d, 0.5, method=method)), float(lo), float(hi), p, n, int((d < 0).sum()),
                  int((d > 0).sum()))


def paired_to_reference(per_trial_frame, metric: str, reference: str = "frozen-polarity",
                        by: str | Sequence[str] = "n", pair_on: str | Sequence[str] = "trial",
                        alpha: float = 0.05, nan_policy: str = "auto", confidence: float = 0.95,
                        n_boot: int = 10_000, seed: int = 0, condition_col: str = "condition"):
    """Each condition against ``reference`` within every group of ``by``, paired on ``pair_on``
    (the trial): :func:`paired_difference` of ``condition - reference``, Holm-Bonferroni across
    ALL comparisons in the table.  Trials missing either side are left out.

    Returns a DataFrame with the ``by`` columns and ``condition, reference, median_diff, ci_low,
    ci_high, n_pairs, n_lower, n_higher, p, p_holm, reject, stars``; ``n_lower`` counts trials in
    which the condition's value was below the reference's (lower error: better)."""
    import pandas as pd

    df = per_trial_frame
    by_cols = [by] if isinstance(by, str) else list(by)
    pair_cols = [pair_on] if isinstance(pair_on, str) else list(pair_on)
    policy, others = _check_frame(df, metric, reference, by_cols + pair_cols, nan_policy, condition_col)
    rows = []
    for key, g in df.groupby(by_cols, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        wide = g.pivot_table(index=pair_cols, columns=condition_col, values=metric,
                             aggfunc="first", dropna=False)
        if reference not in wide:
            continue
        for cond in others:
            if cond not in wide:
                continue
            pair = wide[[cond, reference]]
            if policy == "omit":
                pair = pair.dropna()
            r = paired_difference(pair[cond].to_numpy(), pair[reference].to_numpy(), policy,
                                  confidence=confidence, n_boot=n_boot, seed=seed)
            rows.append({**dict(zip(by_cols, key)), "condition": cond, "reference": reference,
                         "median_diff": r.median, "ci_low": r.ci_low, "ci_high": r.ci_high,
                         "n_pairs": r.n, "n_lower": r.n_lower, "n_higher": r.n_higher, "p": r.p})
    columns = by_cols + ["condition", "reference", "median_diff", "ci_low", "ci_high", "n_pairs",
                         "n_lower", "n_higher", "p", "p_holm", "reject", "stars"]
    out = pd.DataFrame(rows, columns=columns[:-3])
    return _with_holm(out, alpha)[columns]
