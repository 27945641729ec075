"""A user's own network (``--arch package.module:factory``, a callable ``num_classes -> nn.Module``)
in the image protocol and in ``polarity source train``: the factory rule and its one-line errors,
the seeded initialisation, the template selection rule and head on timm models built without
weights, and both commands end to end on two tiny folder datasets."""
from __future__ import annotations

import dataclasses
import json
import shlex
import sys

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from _cli import _cli, _one_line_error
from _user_models import sequential, timm_resnet

import _user_models
from polarity import Template
from polarity.cli import main
from polarity.data import images
from polarity.engine.spec import spec_hash
from polarity.experiments import get
from polarity.models import ModelError, build_model, head_names, initialised
from polarity.sources import read_source_dir
from polarity.sources.directory import MANIFEST
from polarity.store import trials_frame
from polarity.transfer import TransferError, clear_memo, load_source, polarity_template

# one pytest-xdist worker runs this module: its module-scoped fixtures do real work (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("test_user_model")

torch.set_num_threads(1)
RESNET, CONVNEXT, SEQ = "_user_models:timm_resnet", "_user_models:timm_convnext", "_user_models:sequential"
ALL = ("fluid-rand", "frozen-rand", "fluid-polarity", "frozen-polarity", "fluid-weight",
       "frozen-weight", "frozen-shuffled", "frozen-balanced", "frozen-oracle", "fluid-oracle")
HAVE_FMNIST = all((images.DEBIAN_FMNIST_DIR / f"{s}.gz").is_file() for s in images.FMNIST_FILES.values())
TEMPLATE_ARMS = ("fluid-rand", "frozen-rand", "fluid-polarity", "frozen-polarity",
                 "frozen-shuffled", "frozen-balanced", "frozen-oracle", "fluid-oracle")


# ----------------------------------------------------------------------------- the factory rule

@pytest.mark.parametrize("arch", [RESNET, CONVNEXT, SEQ])
def test_a_factory_is_built_checked_and_initialised_by_the_seed(arch):
    rng = torch.get_rng_state()
    a, b, c = (initialised(arch, 3, s, in_size=32) for s in (5, 5, 6))
    assert torch.equal(torch.get_rng_state(), rng)        # the caller's generator is left alone
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)     # one seed, one network
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.training and a(torch.zeros(4, 3, 32, 32)).shape == (4, 3)


@pytest.mark.parametrize("arch, needle", [
    ("_user_models:ten_classes", "returns (2, 10) for a batch of 2 images; the protocol needs (2, 3)"),
    ("_user_models:no_module", "returned a str for num_classes=3, not an nn.Module"),
    ("_user_models:NOT_CALLABLE", "is an int, not a callable"),
    ("_user_models:sequental", "has no attribute 'sequental' (model '_user_models:sequental'); "
                               "did you mean 'sequential'?"),
    ("_no_such_module:f", "cannot import module '_no_such_module'"),
    ("_user_models:conv_head", "no nn.Linear layer to call its head; give the module a 'polarity_head'"),
    ("_user_models:", "is not package.module:factory"),
    ("a b:c", "is not package.module:factory"),
])
def test_a_bad_factory_is_one_line_naming_it(arch, needle):
    with pytest.raises(ModelError) as e:
        build_model(arch, 3, in_size=16)
    assert needle in str(e.value) and "\n" not in str(e.value)


def _one_line_about(text: str, err: Exception) -> None:
    msg = str(err)
    assert "\n" not in msg and repr(text) in msg, msg


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=30))
def test_any_model_string_is_a_network_or_one_line_naming_it(text):
    """Strings that cannot name an importable module are refused without importing anything:
    'unknown model' (no ':') or 'not package.module:factory'."""
    module, sep, _ = text.partition(":")
    assume(not (module and all(p.isidentifier() for p in module.split("."))))
    with pytest.raises(ValueError) as e:
        build_model(text, 3, in_size=8)
    _one_line_about(text, e.value)
    assert ("unknown model" if not sep else "is not package.module:factory") in str(e.value)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["_user_models", "json", "_no_such_module_h3", "torch.nn"]),
       st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}(\.[A-Za-z_][A-Za-z0-9_]{0,6})?", fullmatch=True))
def test_any_attribute_of_a_module_is_a_network_or_one_line_naming_it(module, attr):
    """Whatever the attribute turns out to be (missing, not callable, a callable that fails or
    returns something else, or a network), the answer is an nn.Module with one logit per class
    or a one-line ModelError naming the string."""
    text = f"{module}:{attr}"
    try:
        model = build_model(text, 3, in_size=8)
    except ModelError as e:
        _one_line_about(text, e)
    else:
        assert model.eval()(torch.zeros(2, 3, 8, 8)).shape == (2, 3)


def test_a_factory_may_name_its_own_head():
    m = build_model("_user_models:conv_head_named", 3, in_size=16)
    assert head_names(m) == ("0.weight", "0.bias")


def test_a_factory_module_is_found_in_the_current_directory(tmp_path, monkeypatch):
    """As `python -m` would: the `polarity` script's sys.path lacks the current directory."""
    (tmp_path / "my_nets_h3.py").write_text(
        "from torch import nn\n\ndef net(k):\n    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, k))\n")
    (tmp_path / "broken_nets_h3.py").write_text("import not_installed_anywhere_h3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert build_model("my_nets_h3:net", 4, in_size=8)(torch.zeros(1, 3, 8, 8)).shape == (1, 4)
    with pytest.raises(ModelError, match="importing module 'broken_nets_h3' of model "
                                         "'broken_nets_h3:net' failed: ModuleNotFoundError"):
        build_model("broken_nets_h3:net", 4)
    for name in ("my_nets_h3", "broken_nets_h3"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("factory", [timm_resnet, sequential])
def test_selection_rule_and_head_on_a_factory_network(factory):
    """The default template constrains every conv/linear weight (norm layers and biases free);
    the head is the last nn.Linear and keeps the target's own signs under a transferred polarity."""
    model, source = factory(3), factory(5)
    weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert set(Template.from_module(model).keys()) == weights
    head = set(head_names(model))
    assert head == {k for k in dict(model.named_parameters()) if k.startswith(("fc.", "7."))}
    t = polarity_template(Template.from_module(source), model)
    src = Template.from_module(source)
    for k in weights - head:
        assert torch.equal(t[k], src[k]), k
    for k in weights & head:
        assert torch.equal(t[k], torch.sign(dict(model.named_parameters())[k].detach()).to(torch.int8)), k


# ----------------------------------------------------------------------------- end to end

def _write_folder(root, hue: int, n_train=8, n_test=4):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(hue)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(("a", "b", "c")):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
                img[..., (k + hue) % 3] += 150
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def _train(capsys, data, out, arch=RESNET, *more):
    return _cli(capsys, "source", "train", f"folder:{data}", "--arch", arch, "--epochs", "1",
                "--batch-size", "8", "--in-size", "16", "--threads", "1", "--eval-every", "1",
                "--out", out, "--quiet", *more)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """Sources trained with a timm ResNet on folder A (transfer) and on folder B (the oracle),
    then all ten conditions on B with the same network, every command through the CLI."""
    tmp = tmp_path_factory.mktemp("user-model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLARITY_CACHE", str(tmp / "cache"))
        clear_memo()
        a, b = _write_folder(tmp / "A", 0), _write_folder(tmp / "B", 1)
        for data, out in ((a, tmp / "src-a"), (b, tmp / "src-b")):
            assert main(["source", "train", f"folder:{data}", "--arch", RESNET, "--epochs", "1",
                         "--batch-size", "8", "--in-size", "16", "--threads", "1",
                         "--out", str(out), "--quiet"]) == 0
        run = tmp / "run"
        argv = ["run", "images", "--preset", "tiny", "--dataset", f"folder:{b}", "--arch", RESNET,
                "--source", str(tmp / "src-a"), "--oracle-source", str(tmp / "src-b"),
                "--conditions", ",".join(ALL), "--set", "sample_sizes=12", "--set", "epochs=1",
                "--set", "batch_size=6", "--set", "in_size=16", "--set", "switch_epochs=0",
                "--out", str(run), "--no-report", "--quiet"]
        assert main(argv) == 0
        clear_memo()
        yield tmp, run, argv


def test_source_train_records_the_factory_and_verifies(user_run, capsys, tmp_path):
    tmp, _, _ = user_run
    m = json.loads((tmp / "src-a" / MANIFEST).read_text())
    assert m["arch"] == RESNET and m["model"] == {"in_size": 16, "num_classes": 3}
    assert f"--arch {RESNET} " in m["command"]
    assert main(["source", "info", str(tmp / "src-a"), "--verify"]) == 0   # init agreement recomputed
    assert "init agreement recomputed" in capsys.readouterr().out
    # the recorded command makes the same network again, bit for bit (the factory's init is seeded)
    argv = shlex.split(m["command"])[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLARITY_CACHE", str(tmp / "cache"))
        assert main(argv + ["--quiet"]) == 0
    one, two = read_source_dir(tmp / "src-a").state_dict, read_source_dir(tmp_path / "again").state_dict
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


def test_every_condition_runs_on_the_users_network(user_run):
    _, run, _ = user_run
    df = trials_frame(run)
    by = {r.condition: r.extra for r in df.itertuples()}
    assert sorted(by) == sorted(ALL)
    for c in TEMPLATE_ARMS:   # the magnitude control: every template arm keeps the init's |w|
        assert by[c]["magnitude_equal_rand"] is True and by[c]["init_violations"] == 0, c
    for c in ALL:
        if c.startswith("frozen-"):
            assert by[c]["final_violations"] == 0, c
    for c in ("fluid-polarity", "frozen-polarity", "fluid-weight", "frozen-weight"):
        assert by[c]["source_sign_agreement_init"] == 1.0, c
    for c in ("frozen-oracle", "fluid-oracle"):
        assert by[c]["oracle_sign_agreement_init"] == 1.0, c
    assert by["frozen-shuffled"]["source_sign_agreement_init"] < 0.7
    assert by["fluid-weight"]["magnitude_equal_rand"] is False   # the source's own weights


def test_template_export_maps_a_source_onto_the_users_network(user_run, tmp_path):
    tmp, _, _ = user_run
    out = tmp_path / "t.polarity"
    assert main(["template", "export", "--source", str(tmp / "src-a"), "--dataset", "fmnist",
                 "--arch", RESNET, "--in-size", "16", "--map", "--out", str(out)]) == 0
    t, src = Template.load(out), read_source_dir(tmp / "src-a").template
    model = timm_resnet(10)
    head = set(head_names(model))
    assert set(t.keys()) == set(Template.from_module(model).keys())
    assert all(torch.equal(t[k], src[k]) for k in t.keys() if k not in head)


def test_the_factory_string_is_part_of_the_spec(user_run, capsys):
    _, run, argv = user_run
    spec = json.loads((run / "spec.json").read_text())
    assert spec["hparams"]["arch"] == RESNET
    hp = get("images").presets["tiny"]
    assert spec_hash("images", dataclasses.replace(hp, arch=RESNET)) != spec_hash(
        "images", dataclasses.replace(hp, arch=CONVNEXT))
    # the same command again finds its run complete; another network is another spec
    assert main(argv) == 0
    other = [a if a != RESNET else SEQ for a in argv]
    code, _, err = _cli(capsys, *other)
    _one_line_error(code, err, "is a _user_models:timm_resnet", "the target is a _user_models:sequential")


def test_a_source_that_no_longer_fits_the_factory_names_the_parameter(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "cache"))
    data = _write_folder(tmp_path / "A", 0)
    code, _, err = _train(capsys, data, tmp_path / "src", SEQ)
    assert code == 0, err
    monkeypatch.setattr(_user_models, "WIDTH", 4)   # the user changed their network since
    clear_memo()
    with pytest.raises(TransferError, match=r"do not fit the manifest's _user_models:sequential .*"
                                            r"first difference: '0.weight'"):
        load_source(str(tmp_path / "src"), SEQ, model_kwargs={"in_size": 16})
    src = read_source_dir(tmp_path / "src", verify=False)   # its template onto the new network
    with pytest.raises(ValueError, match=r"0.weight.*\(8, 3, 3, 3\).*\(4, 3, 3, 3\)|0.weight.*\(4, 3, 3, 3\).*\(8, 3, 3, 3\)"):
        polarity_template(src.template, sequential(3))
    clear_memo()


@pytest.mark.parametrize("arch, needle", [
    ("_user_models:ten_classes", "returns (2, 10) for a batch of 2 images; the protocol needs (2, 3)"),
    ("_user_models:nope", "has no attribute 'nope'"),
    ("compat", "unknown arch 'compat'; did you mean 'compact'?"),
])
def test_cli_refuses_a_bad_network_before_anything_is_written(arch, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "cache"))
    data = _write_folder(tmp_path / "A", 0)
    code, _, err = _train(capsys, data, tmp_path / "src", arch)
    _one_line_error(code, err, needle)
    assert not (tmp_path / "src" / MANIFEST).exists()
    code, _, err = _cli(capsys, "run", "images", "--preset", "tiny", "--dataset", f"folder:{data}",
                        "--arch", arch, "--source", "none", "--conditions", "fluid-rand",
                        "--set", "in_size=16", "--out", tmp_path / "run")
    _one_line_error(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_a_pretrained_source_is_trained_with_the_users_network(tmp_path, monkeypatch):
    """``pretrained:fmnist`` for a factory target: the source recipe trains the same factory
    (a plain nn.Sequential here) at the target's input size, then the six conditions run."""
    if not HAVE_FMNIST:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "cache"))
    clear_memo()
    data = _write_folder(tmp_path / "B", 1)
    run = tmp_path / "run"
    assert main(["run", "images", "--preset", "tiny", "--dataset", f"folder:{data}", "--arch", SEQ,
                 "--source", "pretrained:fmnist,train_n=60,epochs=1", "--set", "sample_sizes=12",
                 "--set", "epochs=1", "--set", "batch_size=6", "--set", "in_size=16",
                 "--set", "switch_epochs=0", "--out", str(run), "--no-report", "--quiet"]) == 0
    df = trials_frame(run)
    assert len(df) == 6
    (cached,) = (tmp_path / "cache" / "sources").iterdir()
    m = json.loads((cached / MANIFEST).read_text())
    assert m["arch"] == SEQ and m["model"] == {"in_size": 16, "num_classes": 10}
    assert m["dataset"] == "fmnist"
    clear_memo()


def test_default_source_names_are_one_folder(tmp_path):
    from polarity.sources.cli import default_name
    from polarity.sources.recipe import SourceRecipe

    assert default_name(SourceRecipe(dataset="cifar10:animals")) == "cifar10-animals-compact-w0.5"
    assert default_name(SourceRecipe(dataset=f"folder:{tmp_path}/shapes/", arch=RESNET)) == "shapes-timm_resnet"
    assert default_name(SourceRecipe(dataset="fmnist", arch="pkg.nets:Zoo.small")) == "fmnist-Zoo.small"


@pytest.mark.parametrize("argv", [
    ["show", "images", "--preset", "tiny", "--dataset", "fmnist", "--model", "nope_pkg_x:make"],
    ["source", "train", "fmnist", "--model", "nope_pkg_x:make", "--epochs", "1"],
])
def test_model_is_the_flag_a_model_zoo_user_types_for_arch(capsys, argv):
    """``--model`` is another name of ``--arch`` wherever a network is chosen (issue 22 item 5)."""
    code, _, err = _cli(capsys, *argv)
    _one_line_error(code, err, "nope_pkg_x", "No module named")
