"""Transfer sources: parsing, applying a source template with the target's magnitudes, the
source cache, and the template export CLI."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from polarity import Template, impose
from polarity.models import build_model, head_names, init_glorot_
from polarity.transfer import (PretrainConfig, TransferError, clear_memo, load_source,
                               parse_source, polarity_template, transfer_weights)

torch.set_num_threads(1)

TINY = dict(in_size=16, width=0.25)


def _model(seed: int):
    m = build_model("compact", 10, **TINY)
    init_glorot_(m, seed)
    return m


# ----------------------------------------------------------------------------- parsing

def test_parse_source_forms():
    assert parse_source("imagenet").kind == "imagenet"
    s = parse_source("imagenet:/tmp/x.pth")
    assert (s.kind, s.path, s.label) == ("imagenet", "/tmp/x.pth", "IN")
    s = parse_source("pretrained:cifar10")
    assert (s.kind, s.dataset, s.label, s.overrides) == ("pretrained", "cifar10", "CIFAR-10", ())
    assert parse_source("none").kind == "none"
    s = parse_source("pretrained:cifar10:animals, epochs=2,seed=5 ,optimizer=adamw,flip=false,lr=2e-3")
    assert (s.dataset, s.label) == ("cifar10:animals", "CIFAR-10 [animals]")
    assert dict(s.overrides) == {"epochs": 2, "seed": 5, "optimizer": "adamw", "flip": False, "lr": 0.002}
    r = s.recipe("compact", {"width": 0.25, "in_size": 16}, {"epochs": 9, "train_n": 100})
    assert (r.dataset, r.width, r.in_size, r.epochs, r.seed, r.train_n, r.flip) == \
        ("cifar10:animals", 0.25, 16, 2, 5, 100, False)
    assert parse_source(s) is s                       # a parsed value passes through


@pytest.mark.parametrize("bad, words", [
    ("imagenett", "unknown transfer source 'imagenett'"),
    ("pretrained:mnist", "unknown source dataset 'mnist'"),
    ("pretrained:", "unknown source dataset"),
    ("pretrained:cifar10:plants", "unknown subset 'plants'"),
    ("pretrained:cifar10,epochs", "'epochs' is not field=value"),
    ("pretrained:cifar10,epochs=two", "epochs='two' is not an integer"),
    ("pretrained:cifar10,epochs=0", "epochs must be >= 1"),
    ("pretrained:cifar10,width=2", "unknown or fixed recipe field 'width'"),
    ("pretrained:cifar10,colour=red", "unknown or fixed recipe field 'colour'"),
    ("pretrained:cifar10,seed=1,seed=2", "seed is given twice"),
    ("pretrained:cifar10,optimizer=rmsprop", "unknown optimizer 'rmsprop'"),
    ("pretrained:cifar10,flip=maybe", "is not a boolean"),
    ("imagenet:", "missing checkpoint path"),
    ("weights:foo", "expected 'imagenet'"),
])
def test_bad_source_string_names_the_problem(bad, words):
    with pytest.raises(TransferError, match=words.replace("(", r"\(")):
        parse_source(bad)


def test_bad_sources_at_load(tmp_path):
    with pytest.raises(TransferError, match="needs arch 'alexnet'"):
        load_source("imagenet", "compact")
    with pytest.raises(TransferError, match="not found"):
        load_source(f"imagenet:{tmp_path}/nope.pth", "alexnet")
    with pytest.raises(TransferError, match="no template or weights"):
        load_source("none", "compact")


def test_experiment_rejects_bad_source():
    import dataclasses

    from polarity.experiments import ExperimentError, get

    exp = get("fmnist")
    with pytest.raises(ExperimentError, match="unknown transfer source"):
        exp.validate(dataclasses.replace(exp.presets["quick"], source="imagenat"))
    with pytest.raises(ExperimentError, match="needs arch=alexnet"):
        exp.validate(dataclasses.replace(exp.presets["quick"], source="imagenet"))
    with pytest.raises(ExperimentError, match="target dataset itself"):
        exp.validate(dataclasses.replace(exp.presets["quick"], source="pretrained:fmnist"))


# ----------------------------------------------------------------------------- applying

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transferred_template_keeps_target_magnitudes(seed):
    """Signs equal the source's on every constrained non-head entry, the head keeps the init's
    signs, and the sorted |w| are exactly the random init's (the magnitude control)."""
    source = _model(1000 + seed)
    src_t = Template.from_module(source)
    target = _model(seed)
    heads = set(head_names(target))
    assert heads and all(h.startswith("classifier.6") for h in heads)
    init = {k: v.clone() for k, v in target.state_dict().items()}
    t = polarity_template(src_t, target)
    changed = impose(target, t, "flip")
    assert changed > 0
    assert sum(t.violations(target).values()) == 0
    params = dict(target.named_parameters())
    for name in src_t:
        w = params[name].detach()
        if name in heads:
            assert torch.equal(torch.sign(w), torch.sign(init[name]))
        else:
            assert torch.equal(torch.sign(w).to(torch.int8), src_t[name])
        assert torch.equal(w.abs().flatten().sort().values, init[name].abs().flatten().sort().values)
        assert torch.equal(w.abs(), init[name].abs())  # flipping: elementwise |w| unchanged
    for name, v in init.items():  # biases untouched
        if name not in src_t:
            assert torch.equal(params[name].detach(), v)


def test_transfer_weights_skips_head_and_checks_shapes():
    source, target = _model(5), _model(6)
    init_head = {k: v.clone() for k, v in target.state_dict().items() if k in head_names(target)}
    copied = transfer_weights(source.state_dict(), target)
    assert set(copied) == set(source.state_dict()) - set(head_names(target))
    for k, v in source.state_dict().items():
        if k in init_head:
            assert torch.equal(target.state_dict()[k], init_head[k])
        else:
            assert torch.equal(target.state_dict()[k], v)
    wrong = build_model("compact", 10, in_size=16, width=0.5)
    with pytest.raises(ValueError, match="shape mismatch: features.0.weight"):
        transfer_weights(wrong.state_dict(), target)
    partial = {k: v for k, v in source.state_dict().items() if k != "features.3.bias"}
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match="lacks 1 of the model's entries.*features.3.bias"):
        transfer_weights(partial, target)
    # nothing was copied before the error; extra source entries are ignored
    assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())
    extra = {**source.state_dict(), "classifier.9.weight": torch.zeros(3, 3)}
    assert transfer_weights(extra, target) == copied


def test_polarity_template_shape_mismatch_is_named():
    src_t = Template.from_module(build_model("compact", 10, in_size=16, width=0.5))
    with pytest.raises(ValueError, match="shape"):
        polarity_template(src_t, _model(0))


# ----------------------------------------------------------------------------- cache

PRE = PretrainConfig(n=64, epochs=1, seed=0)


def test_pretrained_source_is_a_cached_source_directory_made_by_the_recipe(tmp_path):
    """pretrained:<dataset> is trained by train_source and written by write_source_dir (one
    trainer, one format); the second load reads the directory; other recipe fields, another
    directory."""
    from polarity.sources import read_source_dir

    clear_memo()
    src = load_source("pretrained:fmnist", "compact", model_kwargs=TINY, pretrain=PRE,
                      cache_dir=tmp_path)
    assert src.info["cached"] is False
    d = tmp_path / "sources"
    (entry,) = list(d.iterdir())
    files = {p.name for p in entry.iterdir()}
    assert {"weights.safetensors", "template.polarity", "manifest.json"} <= files
    assert not [f for f in files if ".tmp" in f]
    net = read_source_dir(entry)                       # a verified source directory
    m = net.manifest
    assert m["recipe"]["train_n"] == 64 and m["recipe"]["epochs"] == 1
    assert m["recipe"]["width"] == 0.25 and m["recipe"]["in_size"] == 16
    assert m["command"].startswith("polarity source train fmnist ") and "--train-n 64" in m["command"]
    assert 0.0 <= m["test_accuracy"] <= 1.0 and 0.5 < m["init_agreement"] <= 1.0
    assert net.template == Template.from_module(src.state_dict)
    mtime = (entry / "weights.safetensors").stat().st_mtime_ns

    clear_memo()
    again = load_source("pretrained:fmnist", "compact", model_kwargs=TINY, pretrain=PRE,
                        cache_dir=tmp_path)
    assert again.info["cached"] is True
    assert (entry / "weights.safetensors").stat().st_mtime_ns == mtime
    assert all(torch.equal(again.state_dict[k], v) for k, v in src.state_dict.items())
    assert again.template == src.template
    # the string's own fields win over the caller's defaults: a different recipe, a new entry
    clear_memo()
    other = load_source("pretrained:fmnist,seed=1", "compact", model_kwargs=TINY, pretrain=PRE,
                        cache_dir=tmp_path)
    assert other.info["cached"] is False and len(list(d.iterdir())) == 2
    assert read_source_dir(other.info["cache_dir"]).manifest["recipe"]["seed"] == 1


def test_damaged_cache_entry_is_recomputed(tmp_path):
    clear_memo()
    src = load_source("pretrained:fmnist", "compact", model_kwargs=TINY, pretrain=PRE,
                      cache_dir=tmp_path)
    (entry,) = list((tmp_path / "sources").iterdir())
    (entry / "template.polarity").write_bytes(b"garbage")
    clear_memo()
    again = load_source("pretrained:fmnist", "compact", model_kwargs=TINY, pretrain=PRE,
                        cache_dir=tmp_path)
    assert again.info["cached"] is False
    assert again.template == src.template  # deterministic training
    assert Template.load(entry / "template.polarity") == src.template


def test_same_dataset_guard_and_its_explicit_escape(tmp_path):
    """A source trained on the target's own dataset (or the whole dataset of a target subset) is
    refused unless allow_same_dataset=True; disjoint subsets (the positive control) pass."""
    from polarity.sources import same_dataset

    assert same_dataset("fmnist", "fmnist") and same_dataset("cifar10", "cifar10:vehicles")
    assert same_dataset("CIFAR10:animals", "cifar10") and same_dataset("cifar10:animals", "cifar10:animals")
    assert not same_dataset("cifar10:animals", "cifar10:vehicles") and not same_dataset("fmnist", "cifar10")
    clear_memo()
    with pytest.raises(TransferError, match="target dataset 'fmnist'.*allow_same_dataset=True"):
        load_source("pretrained:fmnist", "compact", model_kwargs=TINY, pretrain=PRE,
                    cache_dir=tmp_path, target_dataset="fmnist")
    assert not (tmp_path / "sources").exists()           # refused before any training
    oracle = load_source("pretrained:fmnist", "compact", model_kwargs=TINY, pretrain=PRE,
                         cache_dir=tmp_path, target_dataset="fmnist", allow_same_dataset=True)
    assert oracle.info["source_dataset"] == "fmnist"
    # a directory source: the manifest's dataset decides
    with pytest.raises(TransferError, match="allow_same_dataset"):
        load_source(oracle.info["cache_dir"], "compact", model_kwargs=TINY, target_dataset="fmnist")
    assert load_source(oracle.info["cache_dir"], "compact", model_kwargs=TINY,
                       target_dataset="cifar10").info["source_dataset"] == "fmnist"


# ----------------------------------------------------------------------------- CLI

def _cli(argv):
    from polarity.template_cli import add_parser

    parser = argparse.ArgumentParser(prog="polarity")
    add_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_template_export_cli_writes_a_loadable_file(tmp_path, monkeypatch, capsys):
    import polarity.experiments.images as images

    def tiny_source(hp, num_classes, device="cpu", log=None):
        return load_source(hp.source, hp.arch, num_classes=num_classes,
                           model_kwargs=images.model_kwargs(hp), pretrain=PRE, cache_dir=tmp_path)

    monkeypatch.setattr(images, "get_source", tiny_source)
    clear_memo()
    out = tmp_path / "t.pol"
    rc = _cli(["template", "export", "--source", "pretrained:fmnist", "--arch", "compact",
               "--dataset", "cifar10", "--out", str(out), "--in-size", "16", "--width", "0.25"])
    assert rc == 0 and out.exists()
    t = Template.load(out)
    src = tiny_source(images.ImageHparams(dataset="cifar10", source="pretrained:fmnist",
                                          in_size=16, model_width=0.25), 10)
    assert t == src.template
    assert out.stat().st_size * 20 < sum(v.numel() * 4 for v in src.state_dict.values())
    rc = _cli(["template", "info", str(out)])
    assert rc == 0 and "features.0.weight" in capsys.readouterr().out
    # mapped onto a fresh target: the head keeps the target's own signs
    mapped = tmp_path / "m.pol"
    assert _cli(["template", "export", "--source", "pretrained:fmnist", "--dataset", "cifar10",
                 "--out", str(mapped), "--map", "--in-size", "16", "--width", "0.25"]) == 0
    m = Template.load(mapped)
    assert torch.equal(m["features.0.weight"], t["features.0.weight"])
    (bad := tmp_path / "bad.pol").write_bytes(b"nonsense")
    assert _cli(["template", "info", str(bad)]) == 2
    assert "not a polarity template" in capsys.readouterr().err
    assert _cli(["template", "export", "--source", "pretrained:mnist", "--dataset", "cifar10",
                 "--out", str(tmp_path / "x.pol")]) == 2
    assert "unknown source dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_imagenet_checkpoint_source_onto_alexnet_with_new_head(tmp_path):
    """'imagenet:<file>' with a torchvision-layout checkpoint: the 1000-way layer is kept as a
    hidden layer (head='append') and gets the source's signs; the new head keeps its own."""
    from torchvision.models import alexnet as tv_alexnet

    torch.manual_seed(0)
    ckpt = tmp_path / "alexnet.pth"
    torch.save(tv_alexnet(weights=None).state_dict(), ckpt)
    src = load_source(f"imagenet:{ckpt}", "alexnet")
    assert src.label == "IN" and "classifier.6.weight" in src.template
    target = build_model("alexnet", 10, head="append")
    init_glorot_(target, 3)
    init = {k: v.clone() for k, v in target.named_parameters()}
    t = src.polarity_template(target)
    impose(target, t, "flip")
    p = dict(target.named_parameters())
    for name in ("features.0.weight", "classifier.1.weight", "classifier.6.weight"):
        # exact zeros (a few in 37M uniform draws) carry no sign: compare where both have one
        on = (src.template[name] != 0) & (init[name].detach() != 0)
        assert on.float().mean() > 0.999
        assert torch.equal(torch.sign(p[name].detach()).to(torch.int8)[on], src.template[name][on])
        assert torch.equal(p[name].detach().abs(), init[name].abs())
    assert torch.equal(p["classifier.8.weight"].detach(), init["classifier.8.weight"])
    copied = src.transfer_weights(target)
    assert "classifier.6.weight" in copied and "classifier.8.weight" not in copied
    replace = build_model("alexnet", 10, head="replace")
    t2 = src.polarity_template(replace)  # the 1000-way layer has no counterpart: dropped
    assert t2["classifier.6.weight"].shape == (10, 4096)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parse_source_total(text):
    """Any string either parses to a known kind or raises TransferError (never anything else)."""
    try:
        spec = parse_source(text)
    except TransferError as e:
        assert repr(text.strip())[:10] in str(e) or "source" in str(e)
    else:
        assert spec.kind in ("imagenet", "pretrained", "none")
        if spec.kind == "pretrained":
            assert spec.dataset.partition(":")[0] in ("fmnist", "cifar10")
