"""The image protocol's training budget, its evaluation points, and source directories as
``--source`` (issue 11)."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from polarity.analysis.metrics import per_trial
from polarity.cli import main
from polarity.data import images as image_data
from polarity.experiments import ExperimentError, get
from polarity.experiments.images import ImageHparams
from polarity.experiments.images.presets import epochs_for, eval_epochs
from polarity.transfer import clear_memo

# one pytest-xdist worker runs this module: its module-scoped fixtures do real work (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("test_images_budget")

HAVE_FMNIST = all((image_data.DEBIAN_FMNIST_DIR / f"{s}.gz").is_file()
                  for s in image_data.FMNIST_FILES.values())


def test_the_paper_schedule_meets_its_own_budget_and_small_n_trains_100_steps():
    paper = get("fmnist").presets["paper"]
    assert [epochs_for(paper, n) for n in (100, 1000, 2500, 60000)] == [100] * 4
    t = get("fmnist").presets["transfer"]
    # batch 100: n = 100 is full batch (100 epochs), n = 250 has 3 steps an epoch (34 epochs),
    # n = 1000 ten (its 30-epoch floor gives 300 steps)
    assert [epochs_for(t, n) for n in (100, 250, 1000)] == [100, 34, 30]
    q = get("cifar10").presets["quick"]           # batch 50: n = 100 used to get 20 steps
    assert epochs_for(q, 100) * 2 >= 100


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 70_000), batch=st.integers(1, 2000), epochs=st.integers(1, 200),
       min_steps=st.integers(0, 300))
def test_budget_rule_gives_at_least_the_steps_and_no_more_than_needed(n, batch, epochs, min_steps):
    hp = ImageHparams(batch_size=batch, epochs=epochs, min_steps=min_steps)
    e = epochs_for(hp, n)
    per_epoch = -(-n // batch)
    need = min_steps * -(-n // 1000)
    assert e >= epochs and e * per_epoch >= need
    assert e == epochs or (e - 1) * per_epoch < need      # the smallest such number of epochs


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), batch=st.integers(1, 500), epochs=st.integers(1, 150),
       points=st.integers(0, 40))
def test_evaluation_points_are_bounded_increasing_and_end_at_the_last_epoch(n, batch, epochs, points):
    hp = ImageHparams(batch_size=batch, epochs=epochs, min_steps=100, eval_points=points)
    e = epochs_for(hp, n)
    ev = eval_epochs(hp, n)
    assert ev[-1] == e and ev[0] >= 1 and all(a < b for a, b in zip(ev, ev[1:]))
    assert len(ev) == (e if points == 0 else min(points, e))


def test_budget_fields_are_validated():
    exp = get("fmnist")
    base = exp.presets["tiny"]
    for bad, match in [({"min_steps": -1}, "min_steps must be >= 0"),
                       ({"eval_points": -2}, "eval_points must be >= 0"),
                       ({"eval_points": 5, "switch_epochs": 3}, "need validation at every epoch")]:
        with pytest.raises(ExperimentError, match=match):
            exp.validate(dataclasses.replace(base, **bad))


@pytest.fixture(scope="module")
def tiny_source_dir(tmp_path_factory):
    if not HAVE_FMNIST:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path_factory.mktemp("src") / "tops"
    assert main(["source", "train", "fmnist:classes=0,2", "--width", "0.25", "--epochs", "1",
                 "--threads", "1", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_a_source_directory_is_a_source_and_evaluations_are_sparse(tiny_source_dir, monkeypatch):
    """--source DIR: the verified directory's signs and weights transfer; a run validates only at
    its evaluation points, each with the optimizer step and images seen."""
    monkeypatch.setenv("POLARITY_CACHE", str(tiny_source_dir.parent / "cache"))
    clear_memo()
    exp = get("images")
    hp = dataclasses.replace(exp.presets["tiny"], dataset="fmnist:classes=1,3,5", source=str(tiny_source_dir),
                             model_width=0.25, sample_sizes=(30,), epochs=3, batch_size=10,
                             min_steps=40, eval_points=4, switch_epochs=0, val_size=40)
    exp.validate(hp)
    assert epochs_for(hp, 30) == 14 and eval_epochs(hp, 30) == [4, 7, 11, 14]
    results = exp.run_job(hp, exp.jobs(hp)[0])
    by = {r.key.condition: r for r in results}
    for r in results:
        assert [e.epoch for e in r.epochs] == [4, 7, 11, 14]
        assert [(e.extra["step"], e.extra["images_seen"]) for e in r.epochs] == \
               [(12, 120), (21, 210), (33, 330), (42, 420)]
        assert r.extra["source_label"] == "Fashion-MNIST [classes=0,2]"
        assert 0.5 < r.extra["source_val_acc"] <= 1.0
    assert by["frozen-polarity"].extra["source_sign_agreement_final"] == 1.0
    import pandas as pd
    rows = [{"condition": r.key.condition, "n": 30, "width": 0, "trial": 0, "epoch": e.epoch,
             "val_loss": e.val_loss, "val_acc": e.val_acc} for r in results for e in r.epochs]
    pt = per_trial(pd.DataFrame(rows), cutoffs=(0.0,))
    assert set(pt["epochs_to_0"]) == {4.0}        # the first *validated* epoch, not a count


def test_a_mismatched_or_same_dataset_source_is_refused(tiny_source_dir):
    exp = get("images")
    base = dataclasses.replace(exp.presets["tiny"], dataset="fmnist:classes=1,3", source=str(tiny_source_dir),
                               model_width=0.25)
    with pytest.raises(ExperimentError, match=r"is a compact .*width.*0.25.*the target is a compact"):
        exp.validate(dataclasses.replace(base, model_width=0.5))
    with pytest.raises(ExperimentError, match="trained on the target dataset"):
        exp.validate(dataclasses.replace(base, dataset="fmnist:classes=0,2"))
    with pytest.raises(ExperimentError, match="unknown subset 'nothing'"):
        exp.validate(dataclasses.replace(base, dataset="cifar10:nothing"))
    with pytest.raises(ExperimentError, match="unknown transfer source 'no-such-source'"):
        exp.validate(dataclasses.replace(base, source="no-such-source"))
