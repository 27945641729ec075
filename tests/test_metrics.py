"""The shared per-trial measures: the vectorised ``per_trial`` against the per-trial definitions."""
import numpy as np
import pytest
import pandas as pd
from hypothesis import given, settings, strategies as st

from polarity.analysis.metrics import epochs_to_cutoff, error_at_min_loss, per_trial


def _reference(frame, cutoffs):
    rows = []
    for (cond, n, w, t), g in frame.sort_values("epoch").groupby(["condition", "n", "width", "trial"]):
        vl, va = g["val_loss"].to_numpy(), g["val_acc"].to_numpy()
        row = {"condition": cond, "n": n, "width": w, "trial": t, "epochs": len(g),
               "error": float(error_at_min_loss(vl, va)), "final_val_acc": float(va[-1])}
        ep = g["epoch"].to_numpy()
        for c in cutoffs:
            k = epochs_to_cutoff(va, c)   # 1-based position among the validated epochs
            row[f"epochs_to_{c:g}"] = float(ep[int(k) - 1]) if np.isfinite(k) else np.nan
        rows.append(row)
    columns = ["condition", "n", "width", "trial", "epochs", "error", "final_val_acc",
               *(f"epochs_to_{c:g}" for c in cutoffs)]
    return pd.DataFrame(rows, columns=columns)  # the columns even when no row has a full key


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), trials=st.integers(1, 12), nan_rate=st.sampled_from([0.0, 0.2, 1.0]))
def test_per_trial_matches_the_per_trial_definitions(seed, trials, nan_rate):
    rng = np.random.default_rng(seed)
    parts = []
    for t in range(trials):
        e = int(rng.integers(1, 8))
        loss = rng.choice([0.1, 0.2, 0.3], size=e)  # ties: the first epoch of the minimum counts
        loss[rng.random(e) < nan_rate] = np.nan
        parts.append(pd.DataFrame({
            "condition": rng.choice(["a", "b"]), "n": int(rng.choice([8, 20])), "width": 4,
            # validated at every epoch, or only at some (a bounded number of evaluation points)
            "trial": t, "epoch": np.sort(rng.choice(np.arange(1, 20), size=e, replace=False))
            if rng.random() < 0.5 else np.arange(1, e + 1), "val_loss": loss,
            "val_acc": rng.choice([0.5, 0.9, 0.95, np.nan], size=e)}))
    frame = pd.concat(parts).sample(frac=1.0, random_state=seed)  # rows in any order
    frame.iloc[: int(rng.integers(0, 2)), 0] = np.nan  # a row with a missing key is no trial
    got = per_trial(frame, cutoffs=(0.9, 0.95))
    want = _reference(frame, (0.9, 0.95))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want[got.columns].reset_index(drop=True),
                                  check_dtype=False)


def test_per_trial_of_nothing_has_the_columns():
    empty = pd.DataFrame(columns=["condition", "n", "width", "trial", "epoch", "val_loss", "val_acc"])
    assert list(per_trial(empty).columns) == ["condition", "n", "width", "trial", "epochs", "error",
                                              "final_val_acc", "epochs_to_0.9"]
    only_missing = pd.DataFrame({"condition": [np.nan], "n": [8], "width": [4], "trial": [0], "epoch": [1],
                                 "val_loss": [0.1], "val_acc": [0.9]})
    out = per_trial(only_missing)
    assert len(out) == 0 and list(out.columns) == list(per_trial(empty).columns)


# ----------------------------------------------------------------------------- curve-level and common cut-offs

from polarity.analysis.metrics import common_cutoff, epochs_to_common_cutoff, error_auc  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), trials=st.integers(1, 6))
def test_error_auc_is_the_trapezoid_mean_error(seed, trials):
    rng = np.random.default_rng(seed)
    parts, want = [], []
    for t in range(trials):
        k = int(rng.integers(1, 8))
        ep = np.sort(rng.choice(np.arange(1, 40), size=k, replace=False)).astype(float)
        acc = rng.choice([0.1, 0.35, 0.5, 0.8, 1.0], size=k)
        parts.append(pd.DataFrame({"condition": "c", "n": 10, "width": 1, "trial": t, "epoch": ep,
                                   "val_acc": acc, "val_loss": 0.0}))
        err = 1 - acc
        want.append(np.trapezoid(err, ep) / (ep[-1] - ep[0]) if k > 1 else err[0])
    frame = pd.concat(parts).sample(frac=1.0, random_state=seed)
    got = error_auc(frame).sort_values("trial")["error_auc"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert ((got >= 0) & (got <= 1)).all()


def test_error_auc_orders_curves_that_end_alike():
    # two arms reach the same final error; one gets there sooner: a lower area, same end point
    ep = np.arange(1, 11, dtype=float)
    fast = np.minimum(0.5 + 0.1 * ep, 0.9)
    slow = np.minimum(0.1 + 0.08 * ep, 0.9)
    rows = [pd.DataFrame({"condition": c, "n": 100, "width": 1, "trial": 0, "epoch": ep,
                          "val_acc": a, "val_loss": 1 - a}) for c, a in (("fast", fast), ("slow", slow))]
    auc = error_auc(pd.concat(rows)).set_index("condition")["error_auc"]
    assert auc["fast"] < auc["slow"]
    assert set(error_auc(pd.concat(rows), x="epoch").columns) >= {"error_auc", "auc_span"}
    assert len(error_auc(pd.concat(rows).iloc[:0])) == 0


def test_common_cutoff_is_below_every_arms_ceiling():
    rows = []
    for n, ceil in ((100, {"good": 0.8, "bad": 0.5}), (250, {"good": 0.9, "bad": 0.7})):
        for cond, top in ceil.items():
            for t in range(5):
                acc = top * np.array([0.3, 0.6, 0.95, 1.0]) - 0.01 * t
                rows.append(pd.DataFrame({"condition": cond, "n": n, "width": 1, "trial": t,
                                          "epoch": [1, 2, 3, 4], "val_acc": acc, "val_loss": 0.0}))
    frame = pd.concat(rows)
    cuts = common_cutoff(frame, fraction=0.9).set_index("n")
    assert cuts.loc[100, "ceiling_condition"] == "bad" and cuts.loc[100, "ceiling"] == pytest.approx(0.48)
    assert cuts.loc[250, "cutoff"] == pytest.approx(0.9 * 0.68)
    e = epochs_to_common_cutoff(frame, cuts.reset_index())
    # every arm reaches it (a fixed cut-off of 0.75 would fail "bad" in every trial at n = 100)
    assert e["epochs_to_common"].notna().all()
    assert (e[e.condition == "good"]["epochs_to_common"] <= e[e.condition == "bad"]["epochs_to_common"].max()).all()
    with pytest.raises(ValueError, match="fraction"):
        common_cutoff(frame, fraction=0)
