"""Hyper-parameters that describe themselves (issue 22, item 1): the shared fields live once in
``CommonHparams`` with their help and range, one name per idea across experiments; validation,
``--help`` and ``polarity show`` read them; a run made in spec format 1 (the old names) is still
reported and exported, its old command says plainly what changed, and ``polarity store upgrade``
lets it resume and grow."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from polarity import cli, engine, experiments, store
from polarity.engine import runner, spec as spec_mod
from polarity.experiments.base import ExperimentError, check_hparams
from polarity.experiments.hparams import CommonHparams, Range, hparam

from _cli import _cli, _one_line_error

RETIRED = {"ns", "batch", "val_n", "n_val"}  # the names format 2 replaced


def _exps():
    return [experiments.get(n) for n in experiments.names()]


def test_one_name_per_idea():
    for exp in _exps():
        names = {f.name for f in dataclasses.fields(exp.Hparams)}
        assert issubclass(exp.Hparams, CommonHparams), exp.name
        assert not names & RETIRED, (exp.name, names & RETIRED)
        assert set(exp.renamed.values()) <= names, exp.name  # every rename points at a field


def test_every_field_describes_itself():
    common = {f.name for f in dataclasses.fields(CommonHparams)}
    for exp in _exps():
        h = spec_mod.field_help(exp.Hparams, exp.cli_fields)
        assert all(h.get(n) for n in common), (exp.name, [n for n in common if not h.get(n)])
    for exp in _exps():  # every field of every experiment has its help beside it
        h = spec_mod.field_help(exp.Hparams, exp.cli_fields)
        missing = [f.name for f in dataclasses.fields(exp.Hparams) if not h.get(f.name)]
        assert not missing, (exp.name, missing)


def test_validation_reads_the_fields_own_ranges():
    @dataclasses.dataclass(frozen=True)
    class HP(CommonHparams):
        trials: int = 2  # a new default keeps the base's range
        k: int = hparam(1, "a knob", limit=Range(1, 5))

    check_hparams("x", HP())
    with pytest.raises(ExperimentError, match=r"k must be >= 1 and <= 5, got 6"):
        check_hparams("x", HP(k=6))
    with pytest.raises(ExperimentError, match=r"trials must be >= 1 and <= 100000, got 0"):
        check_hparams("x", HP(trials=0))


def test_help_and_show_read_the_fields(capsys):
    code, out, _ = _cli(capsys, "run", "--help")
    assert code == 0 and "Freeze-SGD reset of the frozen conditions" in " ".join(out.split())
    code, out, _ = _cli(capsys, "show", "toy")
    assert code == 0 and "val_size" in out and "validation examples of each trial" in out


def test_an_old_name_says_what_it_is_now(capsys, tmp_path):
    code, _, err = _cli(capsys, "run", "toy", "--set", "ns=8", "--out", tmp_path / "r")
    _one_line_error(code, err, "'ns' is 'sample_sizes' since spec format 2", "polarity store upgrade")
    cfg = tmp_path / "x.toml"
    cfg.write_text('experiment = "xor5d"\n[hparams]\nn_val = 100\n')
    code, _, err = _cli(capsys, "show", "--config", cfg)
    _one_line_error(code, err, "'n_val' is 'val_size'")
    assert not (tmp_path / "r").exists()


def _to_format1(d: Path) -> str:
    """Rewrite a run's spec.json and its database's record as polarity wrote them before format 2
    (the toy's old names, no format, the old hash); returns that hash."""
    data = json.loads((d / "spec.json").read_text())
    exp = experiments.get(data["experiment"])
    back = {new: old for old, new in exp.renamed.items()}
    hp = {back.get(k, k): v for k, v in data["hparams"].items()}
    h = spec_mod.format1_hash(engine.load_spec(d)[1])
    old = {"experiment": data["experiment"], "preset": data["preset"], "hash": h, "hparams": hp,
           "command": ["polarity", "run", "toy", "--set", "ns=8", "--out", str(d)]}
    (d / "spec.json").write_text(json.dumps(old, indent=2, sort_keys=True))
    c = sqlite3.connect(d / "results.sqlite")
    c.execute("UPDATE run SET value = ? WHERE key = 'spec_hash'", (json.dumps(h),))
    c.execute("UPDATE run SET value = ? WHERE key = 'hparams'", (json.dumps(hp),))
    c.execute("DELETE FROM run WHERE key = 'format'")
    c.commit()
    c.close()
    return h


def test_a_format1_run_is_read_refused_plainly_and_upgraded(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = engine.resolve(experiments.get("toy"), "quick", ["sample_sizes=8"])
    h = spec_mod.format1_hash(spec)
    d = tmp_path / "runs" / f"toy-quick-{h[:10]}"  # the name an earlier polarity gave it
    engine.run_spec(spec, d, quiet=True)
    numbers = store.epochs_frame(d)
    assert _to_format1(d) == h
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}

    assert _cli(capsys, "export", d, "--csv", tmp_path / "x.csv")[0] == 0  # read as it is
    assert _cli(capsys, "report", d)[0] == 0
    assert engine.load_spec(d)[1].hp == spec.hp
    for argv in (["--out", d], []):  # the new command, with --out and without (the old name is found)
        code, _, err = _cli(capsys, "run", "toy", "--set", "sample_sizes=8", "--quiet", *argv)
        _one_line_error(code, err, "was made with spec format 1", "ns (now sample_sizes)",
                        "still reported and exported", f"polarity store upgrade {d.relative_to(tmp_path) if not argv else d}")
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != "run.lock"} == {
        k: v for k, v in before.items() if k != "run.lock"}

    code, out, _ = _cli(capsys, "store", "upgrade", d)
    assert code == 0 and "spec format 1 -> 2" in out
    new = json.loads((d / "spec.json").read_text())
    assert new["format"] == 2 and new["hash"] == spec.hash and new["upgraded_from"]["hash"] == h
    s = engine.run_spec(spec, d, quiet=True)  # resumes: nothing to compute
    assert (s.computed_trials, s.skipped_trials) == (0, 4)
    assert store.epochs_frame(d).equals(numbers)
    grown = engine.resolve(experiments.get("toy"), "quick", ["sample_sizes=8", "trials=3"])
    assert engine.run_spec(grown, d, quiet=True).computed_trials == 2  # and grows
