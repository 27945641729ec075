"""`polarity show` and study config files (issue 22, item 2): the resolved hyper-parameters with
their help, counts and an estimated time; `show --toml` writes a config that `run --config` reads
back to the same spec hash as the equivalent --set command."""
from __future__ import annotations

import dataclasses

import json
import sys

import pytest
from hypothesis import given, settings, strategies as st

from polarity import cli, experiments
from polarity.engine import spec as spec_mod
from polarity.engine.show import estimate_seconds
from polarity.engine.runner import plan
from polarity.experiments.hparams import CommonHparams, FrozenHparams, field_meta


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _hash_line(out: str) -> str:
    return next(ln for ln in out.splitlines() if ln.startswith("spec hash ")).split()[-1]


def test_show_lists_values_help_counts_and_an_estimate(capsys):
    code, out, err = _run(capsys, "show", "toy", "--set", "trials=3", "--set", "sample_sizes=8,16,24")
    assert code == 0 and err == ""
    exp = experiments.get("toy")
    sp = spec_mod.resolve(exp, "quick", ["trials=3", "sample_sizes=8,16,24"])
    assert _hash_line(out) == sp.hash
    lines = out.splitlines()
    assert any(ln.startswith(" *trials") and ln.split()[-1] == "3" for ln in lines), out  # * marks overrides
    assert any(ln.startswith("  epochs") and ln.split()[-1] == "5" for ln in lines), out
    assert "learning rate" in out  # help beside the field
    trials, jobs = plan(exp, sp.hp)
    assert f"trials: {len(trials)} in {len(jobs)} jobs" in out and len(trials) == 3 * 2 * 3
    assert "estimated time: about" in out and "an estimate, not a measurement" in out


def test_show_help_comes_from_the_fields_own_comments_and_cli_fields():
    xor = experiments.get("xor5d")
    h = spec_mod.field_help(xor.Hparams, xor.cli_fields)
    assert h["sign_switch"] == "record per-epoch sign-switch fractions (extra metrics)"  # the line's comment
    assert h["reset"] == field_meta(FrozenHparams, "reset", "help")  # the shared base's field
    img = experiments.get("fmnist")
    hi = spec_mod.field_help(img.Hparams, img.cli_fields)
    assert hi["min_steps"].startswith("the training budget")  # the comment block above the field
    assert hi["oracle_source"] == img.cli_fields["oracle_source"]  # cli_fields win
    assert hi["trials"] == field_meta(CommonHparams, "trials", "help")  # the shared base's, default changed
    dose = experiments.get("dose")  # a subclass of ImageHparams: its base's comments too
    assert spec_mod.field_help(dose.Hparams)["min_steps"] == hi["min_steps"]


def test_estimate_grows_with_the_work_and_measures_the_network_it_would_train():
    xor = experiments.get("xor5d")
    hp = xor.presets["quick"]
    t1, j1 = plan(xor, hp)
    hp2 = spec_mod.resolve(xor, "quick", ["trials=20", "epochs=40"]).hp
    t2, j2 = plan(xor, hp2)
    assert 0 < estimate_seconds(xor, hp, t1, len(j1)) < estimate_seconds(xor, hp2, t2, len(j2))
    img = experiments.get("fmnist")
    paper = img.presets["paper"]
    t, j = plan(img, paper)
    assert estimate_seconds(img, paper, t, len(j)) > 0  # AlexNet at 227 px: its step measured here
    # the image estimate measures the spec's own network: four times the width, several times the time
    from polarity.experiments.images.presets import example_seconds
    small = spec_mod.resolve(img, "transfer", ["model_width=0.25", "source=none", "conditions=fluid-rand,frozen-rand"]).hp
    big = spec_mod.resolve(img, "transfer", ["model_width=1.0", "source=none", "conditions=fluid-rand,frozen-rand"]).hp
    assert 2 * example_seconds(small) < example_seconds(big)
    t, j = plan(img, big)
    assert estimate_seconds(img, big, t, len(j)) > 2 * estimate_seconds(img, small, t, len(j))
    # the dose study has one (its hparams inherit the image protocol's rules); a network that
    # cannot be built here has none
    dose = experiments.get("dose")
    t, j = plan(dose, dose.presets["tiny"])
    assert estimate_seconds(dose, dose.presets["tiny"], t, len(j)) > 0
    t, j = plan(img, img.presets["tiny"])
    broken = dataclasses.replace(img.presets["tiny"], arch="no_such_module_xyz:factory")
    assert estimate_seconds(img, broken, t, len(j)) is None


def test_toml_config_runs_with_the_same_spec_hash_as_the_set_command(capsys, tmp_path):
    sets = ["--set", "sample_sizes=8", "--set", "trials=1", "--set", "lr=0.25", "--conditions", "b"]
    code, _, _ = _run(capsys, "run", "toy", *sets, "--out", tmp_path / "a", "--quiet", "--no-report")
    assert code == 0
    cfg = tmp_path / "study.toml"
    code, _, err = _run(capsys, "show", "toy", *sets, "--toml", cfg)
    assert code == 0 and "polarity run --config" in err
    text = cfg.read_text()
    assert 'experiment = "toy"' in text and "lr = 0.25" in text and "# learning rate" in text
    code, _, _ = _run(capsys, "run", "--config", cfg, "--out", tmp_path / "b", "--quiet", "--no-report")
    assert code == 0
    ha = json.loads((tmp_path / "a" / "spec.json").read_text())["hash"]
    hb = json.loads((tmp_path / "b" / "spec.json").read_text())["hash"]
    assert ha == hb
    code, out, _ = _run(capsys, "run", "--config", cfg, "--out", tmp_path / "a", "--quiet", "--no-report")
    assert code == 0 and "0 computed now, 1 already there" in out  # the same spec: it resumes
    # --set on top of a config overrides it (and makes another spec)
    code, out, _ = _run(capsys, "show", "--config", cfg, "--set", "lr=0.5")
    assert code == 0 and _hash_line(out) != ha


@pytest.mark.parametrize("argv", [
    ["xor5d", "--preset", "fig4", "--set", "widths=2..6,64", "--set", "reset_eps=1e-7", "--conditions",
     "frozen-rand@flip,fluid-rand"],
    ["fmnist", "--preset", "transfer", "--set", "val_size=none", "--set", "cutoffs=0.5,0.75"],
    ["images", "--preset", "tiny", "--dataset", "cifar10:animals", "--source", "pretrained:fmnist",
     "--set", "data_root=none", "--set", "channels_last=true"],
])
def test_every_experiments_config_gives_the_set_commands_hash(argv, capsys, tmp_path):
    code, out, _ = _run(capsys, "show", *argv)
    assert code == 0, out
    cfg = tmp_path / "c.toml"
    assert _run(capsys, "show", *argv, "--toml", cfg)[0] == 0
    code, out2, _ = _run(capsys, "show", "--config", cfg)
    assert code == 0 and _hash_line(out2) == _hash_line(out)
    # the config names the same preset, so the same fields are marked as differing from it
    assert [ln[:2] for ln in out.splitlines()] == [ln[:2] for ln in out2.splitlines()]


def test_config_errors_are_one_line_with_suggestions(capsys, tmp_path):
    def err_of(text, *more):
        p = tmp_path / "c.toml"
        p.write_text(text)
        code, _, err = _run(capsys, "show", "--config", p, *more)
        assert code == 2 and err.startswith("polarity: error: ") and err.count("\n") == 1, err
        return err

    assert "did you mean 'trials'" in err_of('experiment = "toy"\n[hparams]\ntrails = 3\n')
    assert "did you mean 'hparams'" in err_of('experiment = "toy"\n[hparam]\ntrials = 3\n')
    assert "not valid TOML" in err_of('experiment = "toy\n')
    assert "needs experiment" in err_of('[hparams]\ntrials = 3\n')
    assert "differs from the config's experiment 'toy'" in err_of('experiment = "toy"\n', "xor5d")
    assert "expected an integer" in err_of('experiment = "toy"\n[hparams]\ntrials = "x"\n')
    assert "trials must be" in err_of('experiment = "toy"\n[hparams]\ntrials = 0\n')
    assert "did you mean 'quick'" in err_of('experiment = "toy"\npreset = "quik"\n')


def test_python_310_without_tomllib_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    (tmp_path / "c.toml").write_text('experiment = "toy"\n')
    with pytest.raises(spec_mod.SpecError, match="Python >= 3.11 .* 'tomli'"):
        spec_mod.read_config(tmp_path / "c.toml")


scalars = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False), st.booleans(),
                    st.text(max_size=30))


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(scalars, st.lists(scalars, max_size=5).map(tuple)))
def test_toml_values_read_back_exactly(value):
    import tomllib

    back = tomllib.loads(f"x = {spec_mod.toml_value(value)}\n")["x"]
    if isinstance(value, tuple):
        back = tuple(back)
    assert back == value and type(back) is type(value)
