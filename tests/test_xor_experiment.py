"""xor5d through the experiment registry: grid, jobs, run_job on the quick preset, report."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from polarity.experiments import get
from polarity.experiments.base import ExperimentError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def xor():
    return get("xor5d")


def test_presets_and_grid(xor):
    fig1 = xor.presets["fig1"]
    assert fig1.sample_sizes == (8, 20, 32, 40, 52, 60, 72, 80, 92, 100, 500)
    assert fig1.widths == (64,) and fig1.trials == 50 and fig1.epochs == 100 and fig1.lr == 0.03
    assert len(xor.trials(fig1)) == 11 * 50 * 3
    fig4 = xor.presets["fig4"]
    assert fig4.widths == tuple(range(2, 30)) + (30, 32, 48, 64)
    for name in ("fig1", "fig4", "c1", "quick"):
        hp = xor.presets[name]
        keys = xor.trials(hp)
        jobs = xor.jobs(hp)
        in_jobs = [k for j in jobs for k in j.trials]
        assert sorted(in_jobs) == sorted(keys) and len(set(in_jobs)) == len(keys)  # a partition
        assert len({j.key for j in jobs}) == len(jobs)
        assert jobs == xor.jobs(hp)  # deterministic
    assert all(xor.is_condition(c) for c in xor.presets["c1"].conditions)


def test_bad_hparams(xor):
    hp = xor.presets["quick"]
    for bad, msg in [(dict(conditions=("frozen-bogus",)), "unknown condition"),
                     (dict(sample_sizes=(8, 9)), "collide"), (dict(sample_sizes=(2,)), ">= 4"),
                     (dict(widths=(0,)), "widths"), (dict(reset="nope"), "reset"),
                     (dict(variant="spiral"), "variant"), (dict(adam_eps=0.0), "adam_eps"),
                     (dict(lr=-1.0), "lr"), (dict(beta2=1.0), "betas")]:
        with pytest.raises(ExperimentError, match=msg):
            xor.validate(dataclasses.replace(hp, **bad))


def _frame(results):
    rows = []
    for r in results:
        for e in r.epochs:
            rows.append({"experiment": "xor5d", **r.key.as_dict(), "epoch": e.epoch,
                         "train_loss": e.train_loss, "train_acc": e.train_acc,
                         "val_loss": e.val_loss, "val_acc": e.val_acc, **e.extra})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_quick_end_to_end(xor, tmp_path):
    hp = xor.presets["quick"]
    jobs = xor.jobs(hp)
    results = [r for j in jobs for r in xor.run_job(hp, j)]
    assert sorted(r.key for r in results) == sorted(xor.trials(hp))
    for r in results:
        assert [e.epoch for e in r.epochs] == list(range(1, hp.epochs + 1))
        assert all(np.isfinite([e.val_loss, e.train_loss]).all() for e in r.epochs)
        assert all(0 <= e.val_acc <= 1 for e in r.epochs)
        assert "switch/fc1.weight" in r.epochs[0].extra
        if r.key.condition.startswith("frozen"):
            assert r.epochs[-1].extra["switch/fc1.weight"] == 0.0  # frozen nets never switch
    # deterministic: the same job gives the same numbers
    again = xor.run_job(hp, jobs[0])
    a = {r.key: [e.val_loss for e in r.epochs] for r in results}
    for r in again:
        assert a[r.key] == [e.val_loss for e in r.epochs]
    # at n=100, H=64, a frozen-sufficient net learns XOR within the quick budget
    best = [r.epochs[-1].val_acc for r in results if r.key.condition == "frozen-sufficient"
            and r.key.n == 100 and r.key.width == 64]
    assert np.median(best) > 0.85
    md = xor.report(hp, _frame(results), pd.DataFrame(), tmp_path)
    assert "Figure 1B" in md and "Figure 4A" in md and "| n |" in md
    for name in ("fig1b_error_vs_n", "fig1c_epochs_vs_n", "fig1c_success_vs_n", "fig4a_success_vs_width"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
        assert len(pd.read_csv(tmp_path / f"{name}.csv")) > 0


@pytest.mark.slow
def test_c1_style_report_and_reset_variants(xor, tmp_path):
    hp = dataclasses.replace(xor.presets["quick"], conditions=("frozen-rand@flip", "frozen-rand@zero",
                                                                "fluid-rand"),
                             sample_sizes=(20, 40), widths=(16,), epochs=4, trials=2)
    results = [r for j in xor.jobs(hp) for r in xor.run_job(hp, j)]
    assert {r.extra["reset"] for r in results} == {"flip", "zero", None}
    md = xor.report(hp, _frame(results), pd.DataFrame(), tmp_path)
    assert "C.1" in md and (tmp_path / "c1_error_vs_n.png").exists()


def _records(xor, hp):
    return {r.key: [(e.train_loss, e.val_loss) for e in r.epochs]
            for j in xor.jobs(hp) for r in xor.run_job(hp, j)}


def _job_base(xor):
    return dataclasses.replace(xor.presets["quick"], conditions=("frozen-rand", "fluid-rand"),
                               sample_sizes=(40,), widths=(6,), epochs=5, lr=0.1, reset="posRand", trials=2)


def test_a_network_does_not_depend_on_the_trials_of_its_job(xor):
    """The same (trial, n, width, condition) gives the same numbers whether it is batched with 2
    or 4 trials: posRand included (each network has its own reset stream)."""
    base = _job_base(xor)
    small, large = _records(xor, base), _records(xor, dataclasses.replace(base, trials=4))
    assert small and all(large[k] == v for k, v in small.items())


def test_a_network_does_not_depend_on_the_padding_of_its_job(xor):
    """Nor on the other widths of its job (padding to 7 units changes the length of every
    element-wise loop and where its vector remainder falls): kernels without fastmath round every
    entry as written."""
    base = _job_base(xor)
    small, padded = _records(xor, base), _records(xor, dataclasses.replace(base, widths=(6, 7)))
    assert small and all(padded[k] == v for k, v in small.items())


@pytest.mark.parametrize("sign_switch", [True, False])
def test_results_are_columns_read_without_a_record_per_epoch(xor, monkeypatch, sign_switch):
    """run_job hands each trial's epochs as ``EpochColumns``, views of the job's arrays: the
    store's encoding and the progress report read the columns, and get what the ``EpochRecord``s
    they stand for give them."""
    from polarity import store
    from polarity.engine.progress import best_val_error
    from polarity.experiments.base import EpochColumns

    hp = dataclasses.replace(_job_base(xor), sample_sizes=(20, 40), widths=(6, 9), epochs=3, sign_switch=sign_switch)
    results = [r for j in xor.jobs(hp) for r in xor.run_job(hp, j)]
    assert results and all(isinstance(r.epochs, EpochColumns) for r in results)
    as_records = [dataclasses.replace(r, epochs=list(r.epochs)) for r in results]
    assert all([e.epoch for e in r.epochs] == [1, 2, 3] for r in as_records)
    assert all(bool(r.epochs[0].extra) == sign_switch for r in as_records)
    want = [(store.pack_trial(r), best_val_error(r)) for r in as_records]
    for name in ("__iter__", "__getitem__"):
        monkeypatch.setattr(EpochColumns, name, lambda *a: pytest.fail("a record was built"))
    assert [(store.pack_trial(r), best_val_error(r)) for r in results] == want
