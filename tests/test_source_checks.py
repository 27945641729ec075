"""Sources that cannot lie (issue 21, items 10 and 15): a source directory's manifest fields are
typed, its weights finite and shaped like its network, its template exactly the weights' signs;
every failure is one line naming the file and the field, never a traceback; ``source train``
keeps a trained network when its --out cannot take it."""
from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch

from polarity.cli import main
from polarity.files import sha256_file
from polarity.sources import SourceError, read_source_dir
from polarity.sources import directory as directory_mod
from polarity.sources.directory import MANIFEST, TEMPLATE, WEIGHTS, write_source_dir
from polarity.sources.recipe import SourceRecipe, initial_model, init_agreement
from polarity.template import Template

torch.set_num_threads(1)
RECIPE = SourceRecipe(dataset="fmnist:classes=0,1", width=0.25, in_size=16, epochs=1, seed=3)
CLASSES = ["T-shirt/top", "Trouser"]


def _metrics(model) -> dict:
    a = init_agreement(RECIPE, model, 2)
    return {"test_accuracy": 0.5, "test_loss": 0.69, "test_images": 2000, "train_images": 12000,
            "train_seconds": 1.0, "threads": 1, "init_agreement": round(a["overall"], 4),
            "init_agreement_per_layer": {k: round(v, 4) for k, v in a["per_layer"].items()},
            "history": []}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid source directory, made without training: the recipe's init, one weight nudged
    so that the init agreement is not trivially 1."""
    model = initial_model(RECIPE, 2)
    with torch.no_grad():
        model.features[0].weight.neg_()
    d = tmp_path_factory.mktemp("good") / "src"
    write_source_dir(d, model, name="tiny", recipe=RECIPE, dataset_label="Fashion-MNIST [classes=0,1]",
                     classes=CLASSES, metrics=_metrics(model), command="polarity source train ...")
    return d


def _copy(good, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(good, d)
    return d


def _edit_manifest(d, **changes):
    m = json.loads((d / MANIFEST).read_text())
    m.update(changes)
    (d / MANIFEST).write_text(json.dumps(m))


def _rehash(d):
    """Update the manifest's sha256/bytes so that only the content checks can catch a change."""
    m = json.loads((d / MANIFEST).read_text())
    for f in (WEIGHTS, TEMPLATE):
        m["files"][f] = {"sha256": sha256_file(d / f), "bytes": (d / f).stat().st_size}
    (d / MANIFEST).write_text(json.dumps(m))


def test_a_good_directory_reads_and_verifies(good, capsys):
    net = read_source_dir(good)
    assert net.manifest["init_agreement"] < 1.0
    assert main(["source", "info", str(good), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "manifest says: Fashion-MNIST [classes=0,1]" in out
    assert "init agreement recomputed" in out and "-1 frac" in out


@pytest.mark.parametrize("field, value, words", [
    ("test_accuracy", "high", "'test_accuracy' must be a number in [0, 1]"),
    ("test_accuracy", 1.5, "'test_accuracy' must be a number in [0, 1]"),
    ("test_accuracy", True, "'test_accuracy' must be a number in [0, 1]"),
    ("classes", 5, "'classes' must be a list"),
    ("classes", ["a", 3], "'classes' must be a list"),
    ("files", [], "'files' must be a mapping"),
    ("format_version", "9", "'format_version' must be a positive integer"),
    ("format_version", 9, "format version 9"),
    ("model", [1, 2], "'model' must be a mapping"),
    ("model", {"in_size": 16, "width": [1]}, "'model.width' must be a number"),
    ("dataset_label", None, "'dataset_label' must be a non-empty string"),
    ("init_agreement", "most", "'init_agreement' must be a number in [0, 1]"),
    ("threads", -1, "'threads' must be a non-negative integer"),
])
def test_wrongly_typed_manifest_fields_are_one_line_errors(good, tmp_path, capsys, field, value, words):
    d = _copy(good, tmp_path)
    _edit_manifest(d, **{field: value})
    for argv in (["source", "info", str(d)], ["source", "info", str(d), "--verify"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and str(d / MANIFEST) in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SourceError, match=words.replace("[", r"\[").replace("]", r"\]")):
        read_source_dir(d)


def test_missing_file_entry_and_bad_hash_text(good, tmp_path):
    d = _copy(good, tmp_path)
    m = json.loads((d / MANIFEST).read_text())
    m["files"][WEIGHTS]["sha256"] = "xyz"
    (d / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(SourceError, match="files.weights.safetensors.sha256"):
        read_source_dir(d)
    del m["files"][WEIGHTS]
    (d / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(SourceError, match="lists no weights.safetensors"):
        read_source_dir(d)


def _save_state(d, state):
    from safetensors.torch import save_file
    save_file(state, str(d / WEIGHTS))


@pytest.mark.parametrize("damage, words", [
    ("random template", "signs differ from its weights' signs"),
    ("negated weights", "signs differ from its weights' signs"),
    ("nan weights", "non-finite values"),
    ("random-bytes template", "template.polarity"),
    ("dropped entry", "the template lacks the weights"),
    ("wrong architecture", "do not fit the manifest"),
])
def test_rehashed_lies_are_caught_by_the_content_checks(good, tmp_path, capsys, damage, words):
    """With the manifest's sha256 updated, the hashes pass: the contents must not."""
    d = _copy(good, tmp_path)
    net = read_source_dir(d)
    state, t = dict(net.state_dict), net.template
    g = torch.Generator().manual_seed(0)
    if damage == "random template":
        Template({k: torch.where(torch.rand(v.shape, generator=g) < 0.5, 1, -1).to(torch.int8)
                  for k, v in t.items()}).save(d / TEMPLATE)
    elif damage == "negated weights":
        _save_state(d, {k: -v for k, v in state.items()})
    elif damage == "nan weights":
        state["features.3.weight"] = state["features.3.weight"].clone()
        state["features.3.weight"][0, 0, 0, 0] = float("nan")
        _save_state(d, state)
    elif damage == "random-bytes template":
        (d / TEMPLATE).write_bytes(torch.randint(0, 256, (600,), generator=g, dtype=torch.uint8).numpy().tobytes())
    elif damage == "dropped entry":
        Template({k: v for k, v in t.items() if k != "features.3.weight"}).save(d / TEMPLATE)
    else:
        _edit_manifest(d, model={"in_size": 16, "width": 0.5, "num_classes": 2})
    _rehash(d)
    with pytest.raises(SourceError, match=words):
        read_source_dir(d)
    assert main(["source", "info", str(d), "--verify"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_run_refuses_a_lying_source_before_any_job(good, tmp_path, capsys, monkeypatch):
    """A run reads and verifies a source directory before its jobs: a rehashed negated copy is
    one line (exit 2) naming the template, no trial computed (each job used to fail with it,
    exit 1, saying 'rerun the same command to retry them'); no dataset is touched first."""
    d = _copy(good, tmp_path)
    net = read_source_dir(d)
    _save_state(d, {k: -v for k, v in net.state_dict.items()})
    _rehash(d)
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "run"
    rc = main(["run", "cifar10", "--preset", "tiny", "--source", str(d), "--set", "in_size=16",
               "--set", "data_source=offline", "--set", "data_root=" + str(tmp_path / "no-data"),
               "--conditions", "frozen-polarity", "--quiet", "--no-report", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(d / TEMPLATE) in err and "signs differ from its weights' signs" in err
    assert not (out / "errors.log").exists()


def test_a_zero_weight_may_carry_any_template_sign(good, tmp_path):
    d = _copy(good, tmp_path)
    net = read_source_dir(d)
    state = dict(net.state_dict)
    state["features.3.weight"] = state["features.3.weight"].clone()
    state["features.3.weight"][0, 0, 0, 0] = 0.0        # the template keeps its old sign there
    _save_state(d, state)
    _rehash(d)
    read_source_dir(d)


def test_a_false_init_agreement_claim_is_refused_by_verify(good, tmp_path, capsys):
    d = _copy(good, tmp_path)
    _edit_manifest(d, init_agreement=0.5)
    read_source_dir(d)                                   # loading does not recompute it ...
    assert main(["source", "info", str(d), "--verify"]) == 2   # ... --verify does
    assert "'init_agreement' says 0.5" in capsys.readouterr().err


def test_run_with_a_source_whose_model_is_a_list_is_a_one_line_error(good, tmp_path, capsys):
    d = _copy(good, tmp_path)
    _edit_manifest(d, model=[1, 2])
    rc = main(["run", "fmnist", "--preset", "tiny", "--source", str(d), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "'model' must be a mapping" in err and "Traceback" not in err


def test_train_out_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["source", "train", "fmnist", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not a directory" in err and "Traceback" not in err
    long = tmp_path / ("x" * 300)
    assert main(["source", "train", "fmnist", "--out", str(long)]) == 2
    assert "cannot create --out" in capsys.readouterr().err


def _no_space_under(monkeypatch, root):
    real = directory_mod.atomic_write

    def full(path, data):
        if str(path).startswith(str(root)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)
    monkeypatch.setattr(directory_mod, "atomic_write", full)


def _trained_without_training(monkeypatch, tmp_path):
    """`source train` with the recipe's init as the trained model; the temporary directory under
    tmp_path (returned)."""
    import tempfile

    from polarity.sources import cli

    def fake_train(recipe, log=None, eval_every=5):
        model = initial_model(recipe, 2)

        class D:
            label, classes = "Fashion-MNIST [classes=0,1]", CLASSES
        return model, D, _metrics(model)

    monkeypatch.setattr(cli, "train_source", fake_train)
    spare_root = tmp_path / "tmp"
    spare_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare_root))
    return spare_root


def test_a_full_disk_after_training_loses_nothing(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing --out: the model (in memory) goes to a fresh temporary directory,
    both places are named, and what was written there is a complete source directory."""
    spare_root = _trained_without_training(monkeypatch, tmp_path)
    out = tmp_path / "out"
    _no_space_under(monkeypatch, out)
    rc = main(["source", "train", "fmnist:classes=0,1", "--width", "0.25", "--in-size", "16",
               "--seed", "3", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Nothing is lost" in err
    (spare,) = list(spare_root.iterdir())
    assert str(spare) in err and f"mv {spare} {out}" in err
    net = read_source_dir(spare)                          # complete and verified
    assert torch.equal(net.state_dict["features.0.weight"], initial_model(RECIPE, 2).features[0].weight)
    assert not any(out.iterdir())                         # no half-written source left at --out
    # nowhere to write at all: the message says so and how to rerun
    _no_space_under(monkeypatch, tmp_path)
    rc = main(["source", "train", "fmnist:classes=0,1", "--width", "0.25", "--in-size", "16",
               "--seed", "3", "--out", str(tmp_path / "out2"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "failed too" in err and "rerun: polarity source train fmnist:classes=0,1" in err


def test_a_full_disk_as_the_safetensors_library_reports_it_loses_nothing(tmp_path, monkeypatch, capsys):
    """On a full disk safetensors raises its own SafetensorError ("I/O error: No space left on
    device (os error 28)"), not OSError: it used to end `source train` in a traceback, the
    trained model lost."""
    import safetensors.torch
    from safetensors import SafetensorError

    spare_root = _trained_without_training(monkeypatch, tmp_path)
    out = tmp_path / "out"
    real = safetensors.torch.save_file

    def full(tensors, filename, metadata=None):
        if str(filename).startswith(str(out)):
            with open(filename, "wb") as f:
                f.write(b"\0" * 64)  # a part, then the disk is full
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    rc = main(["source", "train", "fmnist:classes=0,1", "--width", "0.25", "--in-size", "16",
               "--seed", "3", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "No space left on device" in err and "Nothing is lost" in err, err
    (spare,) = list(spare_root.iterdir())
    assert torch.equal(read_source_dir(spare).state_dict["features.0.weight"],
                       initial_model(RECIPE, 2).features[0].weight)
    assert not any(out.iterdir())


# ----------------------------------------------------------------------------- the recipe

def _fake_data(n=96, classes=2):
    from polarity.data.images import ImageData

    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randint(0, 256, (n, 1, 12, 12), generator=g, dtype=torch.uint8)
    x[y == 1, :, :6] //= 4                       # something to learn
    return ImageData("fake", "fake data", x, y, x[:32].clone(), y[:32].clone(),
                     tuple(f"c{i}" for i in range(classes)), (0.5,), (0.25,))


def test_the_early_phase_erases_the_init_and_the_history_records_it(monkeypatch):
    """A strong early weight decay lowers the init agreement (recorded per epoch and recomputed
    independently from the recipe's seed); the decay returns to the recipe's afterwards; without
    an early phase the recipe is the old one."""
    from polarity.sources import recipe as recipe_mod

    monkeypatch.setattr(recipe_mod, "load", lambda *a, **k: _fake_data())
    seen = []
    real_fit = recipe_mod.fit

    def fit(model, opt, *a, **k):
        seen.append(opt.param_groups[0]["weight_decay"])
        return real_fit(model, opt, *a, **k)

    monkeypatch.setattr(recipe_mod, "fit", fit)
    base = SourceRecipe(dataset="fake", width=0.25, in_size=8, epochs=3, batch_size=32, pad=0, seed=4)
    plain_model, _, plain = recipe_mod.train_source(base, log=None)
    assert seen == [5e-4] * 3
    seen.clear()
    early = SourceRecipe(**{**base.__dict__, "early_weight_decay": 2.0, "early_epochs": 2})
    model, _, m = recipe_mod.train_source(early, log=None)
    assert seen == [2.0, 2.0, 5e-4]
    assert [h["init_agreement"] for h in m["history"]][-1] == m["init_agreement"]
    assert m["init_agreement"] < plain["init_agreement"] - 0.1
    again = init_agreement(early, model, 2)                # independent recomputation
    assert abs(again["overall"] - m["init_agreement"]) < 1e-4
    assert set(again["per_layer"]) == set(m["init_agreement_per_layer"])
    assert "classifier.6.weight" not in again["per_layer"]    # the head is not counted
    from polarity.sources.recipe import command_for
    cmd = command_for(early, "x", "out", 1)
    assert "--early-weight-decay 2 --early-epochs 2" in cmd and "--optimizer sgd" in cmd


def test_recipe_field_checks():
    for bad, words in [({"optimizer": "lbfgs"}, "unknown optimizer"), ({"train_n": -1}, "train_n"),
                       ({"early_epochs": 5, "epochs": 2}, "early_epochs"),
                       ({"data_source": "web"}, "data_source")]:
        with pytest.raises(ValueError, match=words):
            SourceRecipe(dataset="fmnist", **bad).validate()
