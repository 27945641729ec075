"""The image experiment end to end on a small real-data subset, through the registry."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from polarity.experiments import TrialKey, get
from polarity.experiments.images import CONDITIONS, condition_label

torch.set_num_threads(1)


def _tiny(name, **kw):
    exp = get(name)
    hp = dataclasses.replace(exp.presets["tiny"], sample_sizes=(24,), epochs=2, batch_size=8,
                             val_size=30, in_size=16, pretrain_n=48, **kw)
    exp.validate(hp)
    return exp, hp


def _cifar10_jpeg_present() -> bool:
    from polarity.data.images import _cifar_jpeg_candidates, _is_split_dir

    return any(p.is_file() or _is_split_dir(p) for p in _cifar_jpeg_candidates(None))


# as tests/test_data_images.py does: the offline CIFAR-10 copy lives beside the repository
# (../shared/data) or at $POLARITY_CIFAR10_JPEG; a clone elsewhere skips, saying why
needs_cifar10 = pytest.mark.skipif(
    not _cifar10_jpeg_present(),
    reason="the CIFAR-10 JPEG copy is not at ../shared/data/cifar10-jpeg.tar.gz; set $POLARITY_CIFAR10_JPEG")


@pytest.fixture
def source_cache(tmp_path, monkeypatch):
    """Pretrained sources go to a private cache (the datasets' own cache is left alone)."""
    import polarity.transfer as transfer

    real = transfer.load_source

    def load(*a, **k):
        k.setdefault("cache_dir", tmp_path / "cache")
        return real(*a, **k)

    monkeypatch.setattr(transfer, "load_source", load)
    transfer.clear_memo()
    yield tmp_path / "cache"
    transfer.clear_memo()


def test_registry_grid_and_jobs():
    exp = get("fmnist")
    hp = exp.presets["quick"]
    assert set(hp.conditions) == set(CONDITIONS)
    jobs = exp.jobs(hp)
    assert len(jobs) == len(hp.sample_sizes) * hp.trials
    assert sorted(k for j in jobs for k in j.trials) == sorted(exp.trials(hp))
    assert exp.jobs(hp) == jobs  # deterministic
    assert all(len({(k.n, k.trial) for k in j.trials}) == 1 for j in jobs)
    assert "source" in exp.cli_fields
    assert get("cifar10").presets["quick"].source == "pretrained:fmnist"
    assert hp.source == "pretrained:cifar10"
    paper = get("cifar10").presets["paper"]
    assert (paper.arch, paper.in_size, paper.batch_size, paper.epochs, paper.trials,
            paper.source, paper.val_size) == ("alexnet", 227, 1000, 100, 20, "imagenet", None)
    assert paper.sample_sizes == (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000)


def test_condition_labels():
    assert condition_label("frozen-polarity", "IN") == "Frozen IN-Polarity"
    assert condition_label("fluid-weight", "IN") == "Fluid IN-Weight"
    assert condition_label("frozen-rand", "IN") == "Frozen RAND"
    assert condition_label("frozen-polarity", "CIFAR-10") == "Frozen transferred polarity (CIFAR-10)"


@pytest.mark.slow
@needs_cifar10  # the transfer source is pretrained on CIFAR-10
def test_every_condition_end_to_end(tmp_path, monkeypatch, source_cache):
    exp, hp = _tiny("fmnist")
    (job,) = exp.jobs(hp)
    results = exp.run_job(hp, job)
    assert [r.key for r in results] == [TrialKey(c, 24, 0, 0) for c in CONDITIONS]
    by = {r.key.condition: r for r in results}
    assert len({r.seed for r in results}) == 1
    for r in results:
        assert [e.epoch for e in r.epochs] == [1, 2]
        for e in r.epochs:
            assert np.isfinite([e.train_loss, e.val_loss]).all()
            assert 0.0 <= e.val_acc <= 1.0 and 0.0 <= e.train_acc <= 1.0
        json.dumps(r.extra)  # JSON-serialisable
        assert r.extra["dataset_label"] == "Fashion-MNIST"
        assert r.extra["init_violations"] == 0
        assert sum(r.extra["absw_hist"]) > 0
        if r.key.condition.startswith("frozen-"):
            assert r.extra["final_violations"] == 0
    # the magnitude control: the rand and polarity arms start from the same |w|
    for c in ("fluid-rand", "frozen-rand", "fluid-polarity", "frozen-polarity"):
        assert by[c].extra["magnitude_equal_rand"] is True
        assert by[c].extra["absw_hist"] == by["fluid-rand"].extra["absw_hist"]
    assert by["fluid-weight"].extra["magnitude_equal_rand"] is False
    # polarity arms start with the source's signs; the frozen one keeps them
    assert by["frozen-polarity"].extra["source_sign_agreement_init"] == 1.0
    assert by["frozen-polarity"].extra["source_sign_agreement_final"] == 1.0
    assert by["frozen-weight"].extra["source_sign_agreement_final"] == 1.0
    assert 0.3 < by["fluid-rand"].extra["source_sign_agreement_init"] < 0.7
    assert by["fluid-rand"].extra["source_label"].startswith("CIFAR-10")
    # Figure C.5 extras on fluid arms only
    sw = by["fluid-rand"].epochs[0].extra
    assert sw and all(k.startswith("switch/") and 0.0 <= v <= 1.0 for k, v in sw.items())
    assert "switch/features.0.weight" in sw and not any("bias" in k for k in sw)
    assert not by["frozen-rand"].epochs[0].extra
    # deterministic: the same job again gives the same numbers
    again = exp.run_job(hp, job)
    for a, b in zip(results, again):
        assert [(e.train_loss, e.val_loss, e.val_acc) for e in a.epochs] == \
               [(e.train_loss, e.val_loss, e.val_acc) for e in b.epochs]


@pytest.mark.slow
@needs_cifar10
def test_report_from_results(tmp_path, monkeypatch, source_cache):
    """report() turns stored frames into the figures and tables (two trials, two sizes)."""
    import pandas as pd

    exp, hp = _tiny("cifar10")
    hp = dataclasses.replace(hp, sample_sizes=(12, 24), trials=2, epochs=2, cutoff=0.15,
                             cutoffs=(0.1, 0.15, 0.2))
    rows, trows = [], []
    for job in exp.jobs(hp):
        for r in exp.run_job(hp, job):
            for e in r.epochs:
                rows.append({"experiment": "cifar10", **r.key.as_dict(), "epoch": e.epoch,
                             "train_loss": e.train_loss, "train_acc": e.train_acc,
                             "val_loss": e.val_loss, "val_acc": e.val_acc, **e.extra})
            trows.append({**r.key.as_dict(), "seed": r.seed, "wall_s": r.wall_s,
                          "status": "done", "extra": json.dumps(r.extra)})
    out = tmp_path / "report"
    md = exp.report(hp, pd.DataFrame(rows), pd.DataFrame(trows), out)
    assert "CIFAR-10" in md and "Frozen transferred polarity (Fashion-MNIST)" in md
    for f in ("fig2a_error_images.png", "fig2b_success_images.png", "fig2c_epochs_images.png",
              "fig3_images.png", "figC3_images.png", "figC4_images.png", "figC5_images.png",
              "figC6_images.png", "images_per_trial.csv", "fig3_images.csv"):
        assert (out / f).exists(), f
        assert f in md or f.endswith(".csv")
    per_trial = pd.read_csv(out / "images_per_trial.csv")
    assert len(per_trial) == 2 * 2 * len(CONDITIONS)
    assert "| Frozen RAND | 4/4 |" in md  # magnitude control table


def test_bad_hparams_are_named():
    from polarity.experiments import ExperimentError

    exp = get("cifar10")
    q = exp.presets["quick"]
    with pytest.raises(ExperimentError, match="unknown condition"):
        exp.validate(dataclasses.replace(q, conditions=("frozen-polarty",)))
    with pytest.raises(ExperimentError, match="unknown arch"):
        exp.validate(dataclasses.replace(q, arch="vgg"))
    with pytest.raises(ExperimentError, match="unknown reset"):
        exp.validate(dataclasses.replace(q, reset="flop"))
    with pytest.raises(ExperimentError, match="trains on 'cifar10'"):
        exp.validate(dataclasses.replace(q, dataset="fmnist"))
    with pytest.raises(ExperimentError, match="val_size"):
        exp.validate(dataclasses.replace(q, val_size=0))
    with pytest.raises(ExperimentError, match="cut-offs"):
        exp.validate(dataclasses.replace(q, cutoffs=(0.5, 50.0)))
    with pytest.raises(ExperimentError, match="need a transfer source"):
        exp.validate(dataclasses.replace(q, source="none"))
    exp.validate(dataclasses.replace(q, source="none", conditions=("fluid-rand", "frozen-rand")))


def _write_folder_dataset(root, classes=("circle", "square", "stripe"), n_train=8, n_test=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
                img[..., k] += 150  # a class-coloured image
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def test_generic_images_experiment_on_a_users_folder(tmp_path, source_cache):
    """`polarity run images --dataset folder:/path`: a 3-class folder dataset, source pretrained
    on Fashion-MNIST (10 classes; the head is never transferred)."""
    root = _write_folder_dataset(tmp_path / "shapes")
    exp = get("images")
    hp = dataclasses.replace(exp.presets["tiny"], dataset=f"folder:{root}", source="pretrained:fmnist",
                             sample_sizes=(12,), epochs=1, batch_size=6, val_size=None, in_size=16,
                             pretrain_n=48)
    exp.validate(hp)
    (job,) = exp.jobs(hp)
    results = exp.run_job(hp, job)
    assert sorted(r.key.condition for r in results) == sorted(CONDITIONS)
    for r in results:
        assert r.extra["dataset_label"] == "shapes"
        if r.key.condition.startswith("frozen-"):
            assert r.extra["final_violations"] == 0
    with pytest.raises(Exception, match="needs a dataset"):
        exp.validate(exp.presets["tiny"])
