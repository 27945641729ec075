"""The image experiment end to end on a small real-data subset, through the registry, and the
controlled comparison of one trial checked from outside the protocol."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from polarity.engine import progress
import polarity.experiments.images.protocol as protocol
from polarity import Template
from polarity.experiments import TrialKey, get
from polarity.experiments.images import CONDITIONS, condition_label, source_agreement
from polarity.models import build_model, head_names, init_glorot_
from polarity.transfer import clear_memo

# one pytest-xdist worker runs this module: its module-scoped fixtures do real work (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("test_images_experiment")

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
        assert sum(r.extra["absw_hist"]) > 0
    # (what the conditions share is checked from outside in the protocol tests below)
    # polarity arms start with the source's signs; the frozen one keeps them
    assert by["frozen-polarity"].extra["source_sign_agreement_init"] == 1.0
    assert by["frozen-polarity"].extra["source_sign_agreement_final"] == 1.0
    assert by["frozen-weight"].extra["source_sign_agreement_final"] == 1.0
    assert 0.3 < by["fluid-rand"].extra["source_sign_agreement_init"] < 0.7
    assert by["fluid-rand"].extra["source_label"].startswith("CIFAR-10")
    # Figure C.5 extras on fluid arms only
    sw = by["fluid-rand"].epochs[0].extra
    sw = {k: v for k, v in sw.items() if k.startswith("switch/")}
    assert sw and all(0.0 <= v <= 1.0 for v in sw.values())
    assert "switch/features.0.weight" in sw and not any("bias" in k for k in sw)
    assert by["frozen-rand"].epochs[0].extra == {"step": 3, "images_seen": 24}   # no switches
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
    with pytest.raises(ExperimentError, match="cutoffs must be > 0 and <= 1"):
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


def test_generic_images_experiment_on_a_users_folder(folder_trial):
    """`polarity run images --dataset folder:/path`: a 3-class folder dataset, source pretrained
    on Fashion-MNIST (10 classes; the head is never transferred)."""
    _, _, results, _ = folder_trial
    assert sorted(r.key.condition for r in results) == sorted(CONDITIONS)
    for r in results:
        assert r.extra["dataset_label"] == "shapes"
    with pytest.raises(Exception, match="needs a dataset"):
        get("images").validate(get("images").presets["tiny"])


# ----------------------------------------------------------------------------- the protocol, from outside
# A wrapper around the training primitives the protocol calls records, per condition, what training
# was given: initial weights, data permutations, every training batch, the global RNG state
# (dropout masks) and the validation set; an optimizer step post-hook of the test's own counts
# template violations after every step.  Nothing here reads the flags the protocol computes about
# itself (magnitude_equal_rand, init_violations, final_violations).

class Recorder:
    """Wraps ``fit`` and ``evaluate``; one record per call of ``fit`` (one per condition)."""

    def __init__(self, monkeypatch):
        self.runs: list[dict] = []
        self._fit, self._evaluate = protocol.fit, protocol.evaluate
        monkeypatch.setattr(protocol, "fit", self.fit)
        monkeypatch.setattr(protocol, "evaluate", self.evaluate)

    def fit(self, model, opt, x, y, transform, perms, batch_size, device="cpu", on_epoch=None):
        params = dict(model.named_parameters())
        signs0 = {k: torch.sign(p.detach()).clone() for k, p in params.items() if p.dim() >= 2}
        rec = {"w0": {k: p.detach().clone() for k, p in params.items()},
               "perms": [p.clone() for p in perms], "rng": torch.get_rng_state().clone(),
               "batches": [], "violations": [], "val": []}

        def pre_hook(module, args):
            if module.training:
                rec["batches"].append(args[0].detach().clone())

        def after_step(optimizer, args, kwargs):  # runs after the Freezer's own hook
            rec["violations"].append(sum(int(((params[k].detach() * s) < 0).sum())
                                         for k, s in signs0.items()))

        handles = [model.register_forward_pre_hook(pre_hook), opt.register_step_post_hook(after_step)]
        self.runs.append(rec)
        try:
            return self._fit(model, opt, x, y, transform, perms, batch_size, device=device,
                             on_epoch=on_epoch)
        finally:
            for h in handles:
                h.remove()

    def evaluate(self, model, x, y, transform, device="cpu", batch_size=1000):
        self.runs[-1]["val"].append((x.clone(), y.clone()))
        return self._evaluate(model, x, y, transform, device=device, batch_size=batch_size)


@pytest.fixture(scope="module")
def folder_trial(tmp_path_factory):
    """One (n, trial) of the generic experiment on a 3-class folder dataset, source pretrained on
    Fashion-MNIST (caches under a temporary folder), recorded by :class:`Recorder`."""
    tmp = tmp_path_factory.mktemp("images-protocol")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLARITY_CACHE", str(tmp / "cache"))
        clear_memo()
        root = _write_folder_dataset(tmp / "shapes")
        exp = get("images")
        hp = dataclasses.replace(exp.presets["tiny"], dataset=f"folder:{root}",
                                 source="pretrained:fmnist", sample_sizes=(20,), epochs=2,
                                 batch_size=6, val_size=None, in_size=16, pretrain_n=48)
        exp.validate(hp)
        rec = Recorder(mp)
        (job,) = exp.jobs(hp)
        reports = []
        progress.set_channel(lambda n, err: reports.append((n, err)))
        try:
            results = exp.run_job(hp, job)
        finally:
            progress.set_channel(None)
        rec.progress = reports
        source = protocol.get_source(hp, None)  # the memoised source the trial used
        clear_memo()
    return hp, rec, results, source


def test_progress_moves_a_trial_at_a_time_with_its_best_error(folder_trial):
    """An image job reports each condition's trial as it ends (the bar does not wait for the
    whole job), with that trial's best validation error."""
    _, rec, results, _ = folder_trial
    assert rec.progress == [(1, progress.best_val_error(r)) for r in results]


def test_every_condition_shares_data_order_dropout_and_validation(folder_trial):
    hp, rec, results, _ = folder_trial
    assert [r.key.condition for r in results] == list(CONDITIONS)
    assert len(rec.runs) == len(CONDITIONS)
    steps = hp.epochs * math.ceil(20 / hp.batch_size)
    first = rec.runs[0]
    assert len(first["batches"]) == steps and len(first["perms"]) == hp.epochs
    assert sorted(first["perms"][0].tolist()) == list(range(20))
    for run in rec.runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run["perms"], first["perms"]))
        assert len(run["batches"]) == steps
        assert all(torch.equal(a, b) for a, b in zip(run["batches"], first["batches"]))
        assert torch.equal(run["rng"], first["rng"])  # the same dropout masks
        assert len(run["val"]) == hp.epochs
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                   for a, b in zip(run["val"], first["val"]))


def test_initial_magnitudes_per_condition(folder_trial):
    """Rand and polarity arms start from one random init, elementwise the same |w| (the polarity
    arms with the source's signs); weight arms start from the source's weights; every arm's
    head is the same random head."""
    hp, rec, _, source = folder_trial
    w0 = dict(zip(CONDITIONS, (r["w0"] for r in rec.runs)))
    rand = w0["fluid-rand"]
    heads = set(head_names(build_model(hp.arch, 3, **protocol.model_kwargs(hp))))
    assert heads
    assert all(torch.equal(w0["frozen-rand"][k], v) for k, v in rand.items())
    for c in ("fluid-polarity", "frozen-polarity"):
        for k, v in rand.items():
            assert torch.equal(w0[c][k].abs(), v.abs()), (c, k)
            if k in source.template and k not in heads:
                t = source.template[k]
                on = (t != 0) & (v != 0)
                assert torch.equal(torch.sign(w0[c][k]).to(torch.int8)[on], t[on]), (c, k)
            elif v.dim() < 2 or k in heads:  # biases and the head keep the init
                assert torch.equal(w0[c][k], v), (c, k)
    for c in ("fluid-weight", "frozen-weight"):
        for k, v in w0[c].items():
            assert torch.equal(v, rand[k] if k in heads else source.state_dict[k]), (c, k)
    assert not torch.equal(w0["fluid-weight"]["features.0.weight"].abs(), rand["features.0.weight"].abs())


def test_frozen_conditions_keep_their_signs_after_every_step(folder_trial):
    hp, rec, _, _ = folder_trial
    steps = hp.epochs * math.ceil(20 / hp.batch_size)
    by = dict(zip(CONDITIONS, rec.runs))
    for c in CONDITIONS:
        assert len(by[c]["violations"]) == steps, c
        if c.startswith("frozen-"):
            assert by[c]["violations"] == [0] * steps, c
    # the check has teeth: a free network does change signs
    assert any(v > 0 for v in by["fluid-rand"]["violations"])


def test_source_agreement_is_the_weighted_template_agreement():
    """The stored agreement is Template.agreement over the named parameters, weighted by their
    constrained entries: with a template without zeros, the plain fraction of equal signs."""
    model = build_model("compact", 10, in_size=16, width=0.25)
    init_glorot_(model, 0)
    t = Template.random(model, seed=3)
    names = [k for k in t if not k.startswith("classifier.6")]
    params = dict(model.named_parameters())
    same = sum(int((torch.sign(params[k].detach()).to(torch.int8) == t[k]).sum()) for k in names)
    total = sum(t[k].numel() for k in names)
    assert source_agreement(t, model, names) == same / total
    per = t.agreement(model)
    weighted = sum(per[k] * t[k].numel() for k in names) / total
    assert source_agreement(t, model, names) == pytest.approx(weighted, rel=1e-12)
    # zero entries are unconstrained: left out of both counts
    signs = {k: t[k] for k in names}
    signs[names[0]] = torch.zeros_like(signs[names[0]])
    z = Template(signs)
    rest = names[1:]
    same_rest = sum(int((torch.sign(params[k].detach()).to(torch.int8) == t[k]).sum()) for k in rest)
    assert source_agreement(z, model, names) == same_rest / sum(t[k].numel() for k in rest)


# ----------------------------------------------------------------------------- the controls and the oracle
ARMS = ("fluid-rand", "frozen-rand", "frozen-polarity", "frozen-shuffled", "frozen-balanced",
        "frozen-oracle", "fluid-oracle")


@pytest.fixture(scope="module")
def controls_trial(tmp_path_factory):
    """One (n, trial) on Fashion-MNIST with the controls and both oracle arms, transfer source
    pretrained on CIFAR-10, oracle on Fashion-MNIST's own training images (tiny; the sources go
    to a private cache, the decoded datasets are the shared cache's), recorded by Recorder."""
    if not _cifar10_jpeg_present():
        pytest.skip("the CIFAR-10 JPEG copy is not at ../shared/data/cifar10-jpeg.tar.gz")
    from polarity.files import cache_root

    tmp = tmp_path_factory.mktemp("controls")
    shared = cache_root() / "datasets"
    shared.mkdir(parents=True, exist_ok=True)
    (tmp / "cache").mkdir()
    (tmp / "cache" / "datasets").symlink_to(shared)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLARITY_CACHE", str(tmp / "cache"))
        clear_memo()
        exp, hp = _tiny("fmnist", conditions=ARMS, oracle_source="pretrained:fmnist")
        hp = dataclasses.replace(hp, sample_sizes=(20,), batch_size=10, val_size=20)
        rec = Recorder(mp)
        (job,) = exp.jobs(hp)
        results = exp.run_job(hp, job)
        source, oracle = protocol.get_source(hp, None), protocol.get_oracle(hp)
        clear_memo()
    return hp, rec, results, source, oracle


def _names(hp, source):
    """The constrained non-head parameters the source has (what the controls transform)."""
    model = build_model(hp.arch, 10, **protocol.model_kwargs(hp))
    heads = set(head_names(model))
    return [k for k, p in model.named_parameters() if p.dim() >= 2 and k not in heads
            and k in source.template]


@needs_cifar10
def test_every_template_arm_starts_from_the_same_magnitudes(controls_trial):
    """The paired start: rand, transferred, shuffled, balanced and oracle arms all flip one
    random init, so every weight keeps its |w| (hence one multiset of magnitudes)."""
    hp, rec, results, _, _ = controls_trial
    assert [r.key.condition for r in results] == list(ARMS)
    w0 = dict(zip(ARMS, (r["w0"] for r in rec.runs)))
    for c in ARMS[1:]:
        for k, v in w0["fluid-rand"].items():
            assert torch.equal(w0[c][k].abs(), v.abs()), (c, k)
            assert torch.equal(w0[c][k].abs().flatten().sort().values,
                               v.abs().flatten().sort().values), (c, k)
    by = {r.key.condition: r for r in results}
    assert all(by[c].extra["magnitude_equal_rand"] for c in ARMS)
    steps = hp.epochs * math.ceil(20 / hp.batch_size)
    for c, run in zip(ARMS, rec.runs):          # frozen arms keep their signs after every step
        if c.startswith("frozen-"):
            assert run["violations"] == [0] * steps, c


@needs_cifar10
def test_control_templates_keep_or_level_each_tensors_sign_counts(controls_trial):
    """Measured on the start weights: shuffled has the transferred template's per-tensor sign
    counts but not its positions; balanced levels each tensor by |pos - neg| // 2 flips of the
    majority sign; the head and the parameters the source lacks keep the init's signs."""
    hp, rec, results, source, _ = controls_trial
    w0 = dict(zip(ARMS, (r["w0"] for r in rec.runs)))
    sign = {c: {k: torch.sign(v) for k, v in w0[c].items()} for c in ARMS}
    names = _names(hp, source)
    assert names
    for k in names:
        pol, shu, bal = sign["frozen-polarity"][k], sign["frozen-shuffled"][k], sign["frozen-balanced"][k]
        pos, neg = int((pol > 0).sum()), int((pol < 0).sum())
        assert (int((shu > 0).sum()), int((shu < 0).sum())) == (pos, neg), k
        if min(pos, neg) > 20:                    # positions change: structure is gone
            assert float((shu == pol).float().mean()) < 0.9, k
        changed = bal != pol
        assert int(changed.sum()) == abs(pos - neg) // 2, k
        assert bool((pol[changed] == (1 if pos > neg else -1)).all()), k
        assert abs(int((bal > 0).sum()) - int((bal < 0).sum())) <= 1, k
    for k, v in sign["fluid-rand"].items():
        if k not in names:
            for c in ("frozen-shuffled", "frozen-balanced", "frozen-oracle"):
                assert torch.equal(sign[c][k], v), (c, k)
    by = {r.key.condition: r.extra for r in results}
    assert by["frozen-shuffled"]["template_negative_fraction"] == \
        by["frozen-polarity"]["template_negative_fraction"]
    assert abs(by["frozen-balanced"]["template_negative_fraction"] - 0.5) < 1e-3


@needs_cifar10
def test_oracle_arms_take_the_oracles_signs_and_say_they_are_an_upper_bound(controls_trial):
    hp, rec, results, _, oracle = controls_trial
    w0 = dict(zip(ARMS, (r["w0"] for r in rec.runs)))
    names = _names(hp, oracle)
    for c in ("frozen-oracle", "fluid-oracle"):
        for k in names:
            t, w = oracle.template[k], w0[c][k]
            on = (t != 0) & (w != 0)
            assert torch.equal(torch.sign(w).to(torch.int8)[on], t[on]), (c, k)
    by = {r.key.condition: r.extra for r in results}
    for c in ("frozen-oracle", "fluid-oracle"):
        assert "oracle (upper bound)" in by[c]["condition_label"]
        assert by[c]["condition_label"].endswith("(Fashion-MNIST)")
        assert by[c]["oracle_sign_agreement_init"] == 1.0
    assert by["frozen-oracle"]["oracle_sign_agreement_final"] == 1.0
    assert oracle.info["source_dataset"] == "fmnist"
    for c in ARMS:
        if "oracle" not in c:
            assert "oracle" not in by[c]["condition_label"], c


def test_oracle_needs_its_option_and_a_source_of_the_target_itself():
    from polarity.experiments import ExperimentError

    exp = get("fmnist")
    q = dataclasses.replace(exp.presets["quick"], conditions=("fluid-rand", "frozen-oracle"))
    with pytest.raises(ExperimentError, match=r"need an oracle source: set oracle_source \(--oracle-source\)"):
        exp.validate(q)
    with pytest.raises(ExperimentError, match="trained on 'cifar10'.*target dataset 'fmnist'"):
        exp.validate(dataclasses.replace(q, oracle_source="pretrained:cifar10"))
    with pytest.raises(ExperimentError, match="'imagenet' source"):
        exp.validate(dataclasses.replace(q, oracle_source="imagenet"))
    exp.validate(dataclasses.replace(q, oracle_source="pretrained:fmnist"))
    # the ordinary transfer source stays guarded against the target's own data
    with pytest.raises(ExperimentError, match="is the target dataset itself"):
        exp.validate(dataclasses.replace(q, source="pretrained:fmnist"))
    assert "oracle_source" in exp.cli_fields
    # a whole dataset holds its class subsets' training images: no transfer, but an oracle of
    # the subset must be the subset itself
    img = get("images")
    ctl = img.presets["transfer-control"]
    with pytest.raises(ExperimentError, match="holds its training images"):
        img.validate(dataclasses.replace(ctl, source="pretrained:cifar10"))
    with pytest.raises(ExperimentError, match="trained on 'cifar10'"):
        img.validate(dataclasses.replace(ctl, conditions=("frozen-oracle",), oracle_source="pretrained:cifar10"))
    img.validate(dataclasses.replace(ctl, conditions=("frozen-oracle",),
                                     oracle_source="pretrained:cifar10:vehicles"))


def test_presets_and_labels_of_the_controls():
    from polarity.experiments.images import ALL_CONDITIONS, CONTROLS, ORACLE_CONDITIONS

    assert set(CONTROLS) | set(ORACLE_CONDITIONS) <= set(ALL_CONDITIONS) == set(get("fmnist").conditions)
    for name in ("fmnist", "cifar10"):
        presets = get(name).presets
        assert presets["transfer"].conditions == CONDITIONS + ("frozen-shuffled",)
        for p in ("quick", "paper", "tiny"):
            assert presets[p].conditions == CONDITIONS and presets[p].oracle_source is None
    assert "frozen-shuffled" in get("images").presets["transfer-control"].conditions
    assert condition_label("frozen-shuffled", "CIFAR-10") == "Frozen shuffled polarity (CIFAR-10)"
    assert condition_label("frozen-balanced", "IN") == "Frozen balanced IN-Polarity"
    assert condition_label("frozen-oracle", "CIFAR-10", "Fashion-MNIST") == \
        "Frozen oracle (upper bound) polarity (Fashion-MNIST)"
    assert condition_label("fluid-oracle", "CIFAR-10") == "Fluid oracle (upper bound) polarity"
