"""Significance tests of SPEC §6, each condition against a reference condition (Frozen
transferred polarity) within each sample size:

* the paper's test: two-sided Mann-Whitney U on the two groups of trials (``compare_to_reference``);
  ``paper_comparison`` is it with the paper code's Holm family (per sample size, failures omitted);
* the paired analysis (ours; SPEC §6 "paired design"): every condition of one trial shares its
  initialisation, data order and validation set, so the per-trial differences
  ``condition - reference`` are the unit of analysis: their median with a bootstrap
  percentile interval, and the two-sided Wilcoxon signed-rank test (``paired_to_reference``,
  ``signed_rank``).

Holm families (``FAMILIES``): ``"table"`` (ours) corrects across every comparison of a table
(all sample sizes of one metric); ``"group"`` (the paper's code) corrects within each group of
``by`` (each sample size) separately.  Every table states its family (``family_caption``).

Ties. Validation errors move in steps of 1 / val_size and epochs-to-cut-off in steps of the
evaluation spacing, so tied and zero differences are common; the exact signed-rank null for
distinct ranks is then wrong.  ``signed_rank`` computes the exact null *conditional on the
observed midranks* (Pratt's zero handling: zeros take part in the ranking, carry no sign), by
counting sign assignments, for up to ``EXACT_MAX`` non-zero differences; beyond that the normal
approximation with the tie-corrected variance.  Without ties or zeros this is the ordinary exact
test.  docs/images.md ("Statistics") has the reasoning.

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

__all__ = ["holm", "mann_whitney", "MannWhitney", "compare_to_reference", "paper_comparison",
           "stars", "NAN_POLICIES", "FAMILIES", "family_caption", "signed_rank", "SignedRank",
           "paired_difference", "Paired", "paired_to_reference", "EXACT_MAX"]

NAN_POLICIES = ("auto", "omit", "inf")
FAMILIES = ("table", "group")
EXACT_MAX = 200   # signed_rank: exact conditional null up to this many non-zero differences


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
                         nan_policy: str = "auto", condition_col: str = "condition",
                         family: str = "table"):
    """Each condition against ``reference`` within every group of ``by`` (e.g. each sample size),
    two-sided Mann-Whitney U on ``metric``, Holm-Bonferroni across ALL comparisons in the table
    (``family="table"``) or within each group of ``by`` (``family="group"``, the paper's code).

    Returns a DataFrame with the ``by`` columns and ``condition, reference, median,
    reference_median, count, reference_count, U, p, p_holm, reject, stars, family`` (stars from
    ``p_holm``), one row per (group, condition other than the reference). ``nan_policy="auto"``
    is "inf" for ``epochs_to*`` metrics and "omit" otherwise (see the module docstring)."""
    import pandas as pd

    df = per_trial_frame
    by_cols = [by] if isinstance(by, str) else list(by)
    policy, others = _check_frame(df, metric, reference, by_cols, nan_policy, condition_col)
    _check_family(family)

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
                         "reference_count", "U", "p", "p_holm", "reject", "stars", "family"]
    out = pd.DataFrame(rows, columns=columns[:-4])
    return _with_holm(out, alpha, by_cols if family == "group" else None, family)[columns]


def paper_comparison(per_trial_frame, metric: str, reference: str = "frozen-polarity",
                     by: str | Sequence[str] = "n", alpha: float = 0.05,
                     condition_col: str = "condition"):
    """The paper code's test as it ran it: two-sided Mann-Whitney U of each condition against
    ``reference``, Holm-Bonferroni within each sample size (``by``) over those comparisons, trials
    with no value (a cut-off never reached) omitted.  :func:`compare_to_reference`'s columns."""
    return compare_to_reference(per_trial_frame, metric, reference=reference, by=by, alpha=alpha,
                                nan_policy="omit", condition_col=condition_col, family="group")


def family_caption(frame_or_family, test: str = "", by: str = "n") -> str:
    """One sentence naming a table's Holm family, for its caption: from a comparison frame (its
    ``family`` column) or a family name.  ``test`` names the test, e.g. "Wilcoxon signed-rank"."""
    fam = frame_or_family
    if not isinstance(fam, str):
        vals = list(dict.fromkeys(fam["family"])) if "family" in fam and len(fam) else ["table"]
        if len(vals) != 1:
            raise ValueError(f"a table mixes Holm families {vals}")
        fam = vals[0]
    _check_family(fam)
    what = f" ({test})" if test else ""
    if fam == "group":
        return (f"Holm family{what}: the paper's -- within each {by} separately, over the "
                f"conditions compared with the reference; trials that never reached a cut-off "
                f"are omitted.")
    return (f"Holm family{what}: ours -- across every comparison of the table (all {by} of the "
            f"metric together); a trial that never reached a cut-off ranks after every one "
            f"that did.")


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown Holm family {family!r}; choose one of {FAMILIES}")


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


def _with_holm(out, alpha: float, groups: Sequence[str] | None = None, family: str = "table"):
    """Add ``p_holm``, ``reject`` and ``stars`` (of ``p_holm``), Holm over the whole table or,
    with ``groups``, within each group of those columns; and the ``family`` column."""
    p = out["p"].to_numpy(dtype=float)
    adjusted, reject = np.full(len(out), np.nan), np.zeros(len(out), dtype=bool)
    if len(out):
        keys = (np.zeros(len(out), dtype=int) if not groups
                else out.groupby(list(groups), sort=False).ngroup().to_numpy())
        for k in np.unique(keys):
            at = keys == k
            adjusted[at], reject[at] = holm(p[at], alpha=alpha)
    out["p_holm"] = adjusted
    out["reject"] = reject
    out["stars"] = [stars(v) for v in adjusted]
    out["family"] = family
    return out


# ----------------------------------------------------------------------------- paired analysis

class SignedRank(NamedTuple):
    statistic: float  # sum of the ranks of the positive differences (Pratt: zeros ranked, unsigned)
    p: float          # two-sided p-value
    method: str       # "exact" (conditional on the midranks), "normal" (tie-corrected), "none"
    n_nonzero: int


def signed_rank(d: Sequence[float], exact_max: int = EXACT_MAX, decimals: int = 12) -> SignedRank:
    """Two-sided Wilcoxon signed-rank test of the differences ``d`` (finite), valid with ties
    and zeros.

    Ranks of |d| with midranks for ties, zeros included in the ranking (Pratt); T = the sum of the
    positive differences' ranks.  Under the null every non-zero difference is + or - with
    probability 1/2 independently, given the ranks; with at most ``exact_max`` non-zero
    differences that distribution of T is counted exactly (doubled midranks are integers:
    a convolution over them), and p = P(|T - E T| >= |t - E T|).  Beyond, the normal
    approximation with Var T = sum r_i^2 / 4 over the non-zero ranks (the tie-corrected variance),
    no continuity correction.  No non-zero difference: p = 1.

    ``d`` is rounded to ``decimals`` places first: differences of errors in steps of 1/val_size
    (0.301 - 0.299 and 0.205 - 0.203) are equal only up to float rounding, and must tie."""
    from scipy.stats import norm, rankdata

    d = np.asarray(d, dtype=float).reshape(-1)
    if not np.isfinite(d).all():
        raise ValueError("signed_rank needs finite differences (rank infinities beforehand)")
    d = np.round(d, decimals)
    ranks = rankdata(np.abs(d))
    nz = d != 0
    r, pos = ranks[nz], d[nz] > 0
    m = int(r.size)
    t = float(r[pos].sum())
    if m == 0:
        return SignedRank(0.0, 1.0, "none", 0)
    if m <= exact_max:
        k = np.rint(2 * r).astype(np.int64)       # midranks are multiples of 1/2
        total = int(k.sum())
        dist = np.zeros(total + 1)
        dist[0] = 1.0
        top = 0
        for ki in k:                                # each rank: absent or present, p = 1/2 each
            nxt = dist.copy()
            nxt[ki:top + ki + 1] += dist[:top + 1]
            dist = nxt * 0.5
            top += int(ki)
        obs = abs(2 * int(np.rint(2 * t)) - total)  # |2 T2 - total| = 4 |T - E T|
        dev = np.abs(2 * np.arange(total + 1) - total)
        p = float(min(1.0, dist[dev >= obs].sum()))
        return SignedRank(t, p, "exact", m)
    mean, var = r.sum() / 2, (r ** 2).sum() / 4
    z = (t - mean) / math.sqrt(var)
    return SignedRank(t, float(min(1.0, 2 * norm.sf(abs(z)))), "normal", m)


class Paired(NamedTuple):
    median: float   # median of the paired differences a - b (NaN when it falls between -inf and +inf)
    ci_low: float   # bootstrap percentile interval of that median
    ci_high: float
    p: float        # two-sided Wilcoxon signed-rank p-value (:func:`signed_rank`; 1.0 when every difference is 0)
    n: int          # pairs after NaN handling
    n_lower: int    # pairs with a < b (for errors and epochs: a did better)
    n_higher: int   # pairs with a > b
    reached_a: int = 0  # pairs whose a is finite (reached the cut-off); n under nan_policy="omit"
    reached_b: int = 0


def _pairs(a, b, nan_policy: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal lengths, got {x.size} and {y.size}")
    if nan_policy == "omit":
        keep = ~(np.isnan(x) | np.isnan(y))
        return x[keep], y[keep]
    if nan_policy == "inf":  # a trial that never reached the cut-off is slower than any that did
        return np.where(np.isnan(x), np.inf, x), np.where(np.isnan(y), np.inf, y)
    raise ValueError(f"unknown nan_policy {nan_policy!r}; choose 'omit' or 'inf'")


def _differences(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        d = x - y
    return np.where(np.isinf(x) & np.isinf(y) & (x == y), 0.0, d)   # both failed: a tie


def _median(d: np.ndarray, axis=None) -> np.ndarray:
    """np.median: the mean of the two middle values, so +inf when one of them is +inf (at least
    half the pairs failed on the larger side) and NaN between -inf and +inf (undefined)."""
    with np.errstate(invalid="ignore"):
        return np.median(d, axis=axis)


def paired_difference(a: Sequence[float], b: Sequence[float], nan_policy: str = "omit",
                      confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> Paired:
    """The paired comparison of ``a`` with ``b`` (``a[i]`` and ``b[i]`` from one trial).

    The median of ``d = a - b`` with a bootstrap percentile interval (``n_boot`` resamples of the
    pairs, a fixed ``seed``: the same data give the same interval), and the two-sided Wilcoxon
    signed-rank test (:func:`signed_rank`: exact conditional on ties and zeros).

    With ``nan_policy="inf"`` a NaN (never reached the cut-off) is +inf: slower than every trial
    that reached it.  The difference is then +-inf, ranked beyond every finite one (all such
    pairs tied), and 0 when both failed.  The median is np.median's: when half the pairs or more
    are +inf it is +inf, never a finite value that hides the failures; between -inf and +inf it
    is NaN.  With infinities the interval's bounds are order statistics (lower bound from the
    lower middle value of each resample, upper from the upper), so they are never NaN.
    ``reached_a`` / ``reached_b`` count each side's finite values: report them beside the
    median.  No pairs: NaN."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x, y = _pairs(a, b, nan_policy)
    d = _differences(x, y)
    n = int(d.size)
    reached = int(np.isfinite(x).sum()), int(np.isfinite(y).sum())
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, math.nan, 0, 0, 0, 0, 0)
    rng = np.random.default_rng(seed)
    sample = np.sort(d[rng.integers(0, n, size=(int(n_boot), n))], axis=1)
    lower, higher = sample[:, (n - 1) // 2], sample[:, n // 2]   # each resample's middle values
    q = (1 - confidence) / 2
    lo_i, hi_i = int(math.floor(q * n_boot)), int(math.ceil((1 - q) * n_boot)) - 1
    if np.isfinite(d).all():
        boot = np.sort(lower + (higher - lower) * 0.5)
        lo, hi = boot[lo_i], boot[hi_i]
    else:
        lo, hi = np.sort(lower)[lo_i], np.sort(higher)[hi_i]
    finite = np.abs(d[np.isfinite(d)])
    big = (finite.max() if finite.size else 1.0) * 2 + 1   # ranks of +-inf: beyond all others
    p = signed_rank(np.clip(d, -big, big)).p
    return Paired(float(_median(d)), float(lo), float(hi), p, n, int((d < 0).sum()),
                  int((d > 0).sum()), *reached)


def paired_to_reference(per_trial_frame, metric: str, reference: str = "frozen-polarity",
                        by: str | Sequence[str] = "n", pair_on: str | Sequence[str] = "trial",
                        alpha: float = 0.05, nan_policy: str = "auto", confidence: float = 0.95,
                        n_boot: int = 10_000, seed: int = 0, condition_col: str = "condition",
                        family: str = "table"):
    """Each condition against ``reference`` within every group of ``by``, paired on ``pair_on``
    (the trial): :func:`paired_difference` of ``condition - reference``, Holm-Bonferroni across
    ALL comparisons in the table (``family="table"``, ours) or within each group of ``by``
    (``"group"``).  Trials missing either side are left out.

    Returns a DataFrame with the ``by`` columns and ``condition, reference, median_diff, ci_low,
    ci_high, n_pairs, n_lower, n_higher, reached, reference_reached, p, p_holm, reject, stars,
    family``; ``n_lower`` counts trials in which the condition's value was below the reference's
    (lower error: better); ``reached`` / ``reference_reached`` count the pairs in which each side
    has a finite value (reached the cut-off).  ``tables.paired_cell`` formats a row."""
    import pandas as pd

    df = per_trial_frame
    by_cols = [by] if isinstance(by, str) else list(by)
    pair_cols = [pair_on] if isinstance(pair_on, str) else list(pair_on)
    policy, others = _check_frame(df, metric, reference, by_cols + pair_cols, nan_policy, condition_col)
    _check_family(family)
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
                         "n_pairs": r.n, "n_lower": r.n_lower, "n_higher": r.n_higher,
                         "reached": r.reached_a, "reference_reached": r.reached_b, "p": r.p})
    columns = by_cols + ["condition", "reference", "median_diff", "ci_low", "ci_high", "n_pairs",
                         "n_lower", "n_higher", "reached", "reference_reached", "p", "p_holm",
                         "reject", "stars", "family"]
    out = pd.DataFrame(rows, columns=columns[:-4])
    return _with_holm(out, alpha, by_cols if family == "group" else None, family)[columns]
