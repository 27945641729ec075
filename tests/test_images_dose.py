"""The dose-response experiment (polarity.experiments.images.dose): its grid (one RAND arm per
trial shared by every source), its validation, one tiny job end to end, and its report's
numbers checked against paired_difference on frames built here."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

import polarity.experiments.images.protocol as protocol
from polarity.analysis.stats import paired_difference
from polarity.experiments import ExperimentError, get
from polarity.experiments.images.dose import DoseHparams
from polarity.experiments.images.presets import dose_key, split_key
from polarity.transfer import clear_memo

from test_images_experiment import Recorder, _cifar10_jpeg_present, needs_cifar10

torch.set_num_threads(1)

A = "pretrained:cifar10,epochs=1,train_n=40,batch_size=20"
B = "pretrained:cifar10,epochs=1,train_n=40,batch_size=20,seed=3"
ORACLE = "pretrained:fmnist,epochs=1,train_n=40,batch_size=20"


def _hp(**kw) -> DoseHparams:
    return dataclasses.replace(get("dose").presets["tiny"], sources=(A, B), oracle_source=ORACLE, **kw)


def test_grid_shares_one_rand_arm_per_trial_among_all_sources():
    exp = get("dose")
    hp = _hp(sample_sizes=(20, 30), trials=3)
    exp.validate(hp)
    keys = exp.keys(hp)
    assert keys == ["fluid-rand"] + [dose_key(a, s) for s in (A, B, ORACLE)
                                     for a in ("frozen-polarity", "frozen-shuffled")]
    assert split_key(keys[1]) == ("frozen-polarity", A) and split_key("fluid-rand") == ("fluid-rand", None)
    trials = exp.trials(hp)
    assert len(trials) == exp.grid_size(hp) == 7 * 3 * 2
    jobs = exp.jobs(hp)
    assert len(jobs) == 6 and sorted(k for j in jobs for k in j.trials) == sorted(trials)
    for j in jobs:
        assert [k.condition for k in j.trials].count("fluid-rand") == 1
        assert len({(k.n, k.trial) for k in j.trials}) == 1


def test_the_presets_pair_and_protocol():
    exp = get("dose")
    main = exp.presets["fmnist"]
    transfer = get("fmnist").presets["transfer"]
    assert main.dataset == "fmnist" and main.sample_sizes == (100, 250) and main.trials == 12
    same = [f.name for f in dataclasses.fields(transfer)
            if f.name not in ("source", "conditions", "sample_sizes", "oracle_source")]
    assert all(getattr(main, f) == getattr(transfer, f) for f in same)
    assert main.oracle_source is not None and len(main.sources) >= 2
    assert main.conditions == ("fluid-rand", "frozen-polarity", "frozen-shuffled")
    exp.validate(main)            # every shipped source it names exists and fits the target
    assert exp.grid_size(main) == (1 + 2 * (len(main.sources) + 1)) * 12 * 2


def test_bad_dose_hparams_are_named():
    exp = get("dose")
    cases = [
        (dict(sources=(), oracle_source=None), "list the sources"),
        (dict(sources=("pretrained:fmnist",)), r"the target's own data; .*give it as oracle_source"),
        (dict(sources=(ORACLE + ",seed=4",)), "the target's own data"),
        (dict(source="pretrained:cifar10"), "list every source in sources"),
        (dict(conditions=("fluid-rand",)), "at least one per-source arm"),
        (dict(conditions=("fluid-rand", "frozen-weight")), "unknown condition"),
        (dict(oracle_source="pretrained:cifar10"), "trained on 'cifar10'.*target dataset 'fmnist'"),
        (dict(sources=("imagenet",)), "the study takes source directories"),
    ]
    for change, match in cases:
        hp = dataclasses.replace(_hp(), **change)
        with pytest.raises(ExperimentError, match=match):
            exp.validate(hp)
    with pytest.raises(ExperimentError, match="both a source and the oracle_source"):
        exp.validate(dataclasses.replace(_hp(), sources=(A,), oracle_source=A))


@pytest.mark.slow
@needs_cifar10
def test_one_dose_job_pairs_every_source_with_the_same_start(tmp_path, monkeypatch):
    """Every source's arms start from the RAND arm's magnitudes (flipped onto that source's
    template, or its shuffle) and see its data order; each records what the source is."""
    from polarity.files import cache_root

    shared = cache_root() / "datasets"
    shared.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "datasets").symlink_to(shared)
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "cache"))
    clear_memo()
    exp = get("dose")
    hp = _hp(trials=1)
    exp.validate(hp)
    exp.prepare(hp)
    rec = Recorder(monkeypatch)
    (job,) = exp.jobs(hp)
    results = exp.run_job(hp, job)
    clear_memo()
    assert [r.key for r in results] == list(job.trials)
    rand = rec.runs[0]
    for r, run in zip(results[1:], rec.runs[1:]):
        for k, v in rand["w0"].items():
            assert torch.equal(run["w0"][k].abs(), v.abs()), (r.key.condition, k)
        assert all(torch.equal(a, b) for a, b in zip(run["perms"], rand["perms"]))
        assert torch.equal(run["rng"], rand["rng"])
        ex = r.extra
        assert ex["dose_source"] == split_key(r.key.condition)[1]
        assert ex["oracle"] == (ex["dose_source"] == ORACLE)
        assert 0.9 < ex["source_init_agreement"] <= 1.0         # a 40-image, one-epoch rung
        assert 0.0 <= ex["source_test_accuracy"] <= 1.0
        assert 0.0 < ex["source_negative_fraction"] < 1.0
        assert ("oracle (upper bound)" in ex["condition_label"]) == ex["oracle"]
        json.dumps(ex)
    by = {r.key.condition: r.extra for r in results}
    # independently seeded rungs are different networks
    assert by[dose_key("frozen-polarity", A)]["source_sign_agreement_init"] == 1.0
    assert by[dose_key("frozen-polarity", B)]["source_sign_agreement_init"] == 1.0
    assert by[dose_key("frozen-shuffled", A)]["template_negative_fraction"] == \
        by[dose_key("frozen-polarity", A)]["template_negative_fraction"]


def _frames(errors: dict[str, list[float]], facts: dict[str, dict]):
    """Epoch and trial frames of one n whose per-trial error (at the last, minimum-loss epoch)
    is ``errors[condition][trial]``."""
    rows, trows = [], []
    for cond, errs in errors.items():
        src = split_key(cond)[1]
        for t, e in enumerate(errs):
            for ep, (loss, acc) in enumerate([(2.0, 0.1), (1.0, 1 - e)], start=1):
                rows.append({"condition": cond, "n": 100, "width": 0, "trial": t, "epoch": ep,
                             "val_loss": loss, "val_acc": acc})
            extra = {"dataset_label": "Fashion-MNIST"}
            if src is not None:
                extra.update({"dose_source": src, **facts[src]})
            trows.append({"condition": cond, "n": 100, "width": 0, "trial": t, "extra": json.dumps(extra)})
    return pd.DataFrame(rows), pd.DataFrame(trows)


def test_report_benefits_are_the_paired_differences(tmp_path):
    rng = np.random.default_rng(0)
    rand = list(rng.uniform(0.3, 0.4, 12))
    errors = {"fluid-rand": rand}
    facts = {}
    for i, (src, shift) in enumerate(((A, 0.05), (B, 0.0), (ORACLE, -0.08))):
        pol = [e + shift + rng.normal(0, 0.01) for e in rand]
        errors[dose_key("frozen-polarity", src)] = pol
        errors[dose_key("frozen-shuffled", src)] = [e + rng.normal(0, 0.02) for e in rand]
        facts[src] = {"source_name": f"s{i}", "source_label": "x", "oracle": src == ORACLE,
                      "source_init_agreement": 0.8 - 0.1 * i, "source_test_accuracy": 0.5 + 0.1 * i,
                      "source_negative_fraction": 0.55, "source_dead_unit_fraction": 0.0}
    epochs, trials = _frames(errors, facts)
    md = get("dose").report(_hp(), epochs, trials, tmp_path)
    b = pd.read_csv(tmp_path / "dose_benefits.csv")
    assert len(b) == 3 * 2
    for src in (A, B, ORACLE):
        mine = np.round(1 - (1 - np.array(errors[dose_key("frozen-polarity", src)])), 12)
        for ref in ("fluid-rand", "frozen-shuffled"):
            other = errors[ref if ref == "fluid-rand" else dose_key(ref, src)]
            want = paired_difference(np.round(np.array(other), 12), mine)
            row = b[(b["dose_source"] == src) & (b["versus"] == ref)].iloc[0]
            assert row["benefit"] == pytest.approx(want.median, abs=1e-9)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((want.ci_low, want.ci_high), abs=1e-9)
            assert row["better"] == want.n_higher and row["pairs"] == 12
    row = b[(b["dose_source"] == ORACLE) & (b["versus"] == "fluid-rand")].iloc[0]
    assert row["benefit"] > 0.05 and row["learned"] == pytest.approx(0.4)
    assert (tmp_path / "dose_benefit.png").stat().st_size > 0
    assert "| S3 | s2 [oracle (upper bound)] |" in md and "| S1 | s0 | 0.200 |" in md


def test_dose_figure_uses_each_compared_arms_colour_and_the_shared_caption(tmp_path, monkeypatch):
    """The dose figure draws the comparison with fluid RAND in fluid RAND's colour and the one
    with the shuffled template in frozen-shuffled's, as every other figure does; the table names
    its Holm family with the shared caption."""
    import matplotlib.pyplot as plt

    from polarity.analysis.figures import condition_style
    from polarity.analysis.tables import family_caption
    from polarity.experiments.images import dose_report

    seen = []
    real = plt.Figure.savefig

    def spy(fig, *a, **k):
        for ax in fig.axes:
            seen.append((ax.get_title(), {tuple(np.round(c.get_color() if isinstance(c.get_color(), tuple)
                                                         else matplotlib.colors.to_rgba(c.get_color()), 3))
                                          for c in ax.lines if c.get_marker() not in (None, "None", "")}))
        return real(fig, *a, **k)

    import matplotlib
    monkeypatch.setattr(plt.Figure, "savefig", spy)
    rng = np.random.default_rng(1)
    rand = list(rng.uniform(0.3, 0.4, 6))
    errors = {"fluid-rand": rand}
    facts = {}
    for i, src in enumerate((A, B)):
        errors[dose_key("frozen-polarity", src)] = [e + rng.normal(0, 0.01) for e in rand]
        errors[dose_key("frozen-shuffled", src)] = [e + rng.normal(0, 0.01) for e in rand]
        facts[src] = {"source_name": f"s{i}", "source_label": "x", "oracle": False,
                      "source_init_agreement": 0.8 - 0.1 * i, "source_test_accuracy": 0.5 + 0.1 * i,
                      "source_negative_fraction": 0.55, "source_dead_unit_fraction": 0.0}
    epochs, trials = _frames(errors, facts)
    md = dose_report.report(_hp(), epochs, trials, tmp_path)
    want = {ref: tuple(np.round(matplotlib.colors.to_rgba(condition_style(ref)["color"]), 3))
            for ref, _ in dose_report.COMPARISONS}
    for title, colors in seen:
        ref = "fluid-rand" if "fluid RAND" in title else "frozen-shuffled"
        assert colors == {want[ref]}, (title, colors)
    assert len(seen) == 4
    assert family_caption("table", "Wilcoxon signed-rank", by="n, source and comparison") in md
