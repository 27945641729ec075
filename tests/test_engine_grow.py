"""Growing a run (issue 22, item 3): a spec whose grid holds the stored one (more trials, sample
sizes, widths or conditions) extends the run, computing only the new trials; a smaller grid, a
grid beside the stored one and any other changed hyper-parameter are refused untouched."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from polarity import cli, engine, experiments, store
from polarity.engine import growth, rundir, runner, spec as spec_mod

TOY = experiments.get("toy")


def _spec(*sets, conditions=None):
    return engine.resolve(TOY, "quick", sets=list(sets), conditions=conditions)


def _rows(d: Path) -> dict:
    """Every stored trial's key -> its digest (a row never rewritten keeps it)."""
    c = sqlite3.connect(d / "results.sqlite")
    try:
        return {(c_, n, w, t): dg for c_, n, w, t, dg in
                c.execute("SELECT condition, n, width, trial, digest FROM trials")}
    finally:
        c.close()


def _numbers(d: Path):
    ep = store.epochs_frame(d)
    return ep.sort_values(["condition", "n", "width", "trial", "epoch"]).reset_index(drop=True)


def _tree(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def computed(monkeypatch):
    """The trial keys the toy experiment computes (run in process by the local executor)."""
    seen = []
    orig = type(TOY)._trial

    def counting(self, hp, key, device):
        seen.append(key)
        return orig(self, hp, key, device)

    monkeypatch.setattr(type(TOY), "_trial", counting)
    return seen


def test_more_trials_compute_only_the_new_ones(tmp_path, computed):
    d = tmp_path / "run"
    engine.run_spec(_spec("sample_sizes=8,16"), d, quiet=True)
    before = _rows(d)
    computed.clear()
    grown = _spec("sample_sizes=8,16", "trials=4")
    s = engine.run_spec(grown, d, quiet=True)
    assert (s.total_trials, s.skipped_trials, s.computed_trials) == (16, 8, 8) and s.complete
    assert sorted({k.trial for k in computed}) == [2, 3] and len(computed) == 8  # nothing recomputed
    after = _rows(d)
    assert {k: after[k] for k in before} == before  # the finished rows are untouched
    stored = json.loads((d / "spec.json").read_text())
    assert stored["hash"] == grown.hash and stored["hparams"]["trials"] == 4
    assert [g["grid"]["trials"] for g in stored["grown"]] == [2]
    fresh = tmp_path / "fresh"
    engine.run_spec(grown, fresh, quiet=True)
    assert _numbers(d).equals(_numbers(fresh))  # the grown run is the larger run
    _, sp, st_ = runner.open_run(d)  # spec.json and the database agree; every row fits the grid
    assert sp.hash == grown.hash and st_.meta()["spec_hash"] == grown.hash
    st_.close()
    done = runner.repair_run(d)  # nothing to repair in a grown run
    assert (done["removed"], done["trials"], done.get("reindexed", [])) == ([], 16, [])
    assert engine.run_spec(grown, d, quiet=True).pending_jobs == 0


def test_more_sample_sizes_and_conditions(tmp_path, computed):
    d = tmp_path / "run"
    engine.run_spec(_spec("sample_sizes=8", conditions="a"), d, quiet=True)
    computed.clear()
    grown = _spec("sample_sizes=16,8", "widths=0,3", conditions="b,a")  # a new order is the same grid
    s = engine.run_spec(grown, d, quiet=True)
    assert (s.skipped_trials, s.computed_trials, s.total_trials) == (2, 14, 16)
    assert ("a", 8, 0) not in {(k.condition, k.n, k.width) for k in computed}
    fresh = tmp_path / "fresh"
    engine.run_spec(grown, fresh, quiet=True)
    assert _numbers(d).equals(_numbers(fresh))
    assert engine.write_report(d).exists()


@pytest.mark.parametrize("sets,needles", [
    (["lr=0.25", "trials=4"], ["different spec", "lr: 0.5 vs 0.25", "grows only along"]),
    (["sample_sizes=8", "trials=1"], ["larger grid than requested", "sample_sizes: [8, 16] vs [8]", "polarity report",
                            "another --out"]),
    (["sample_sizes=8,32", "trials=3"], ["neither holds nor is part of", "--set sample_sizes=8,16,32 --set trials=3"]),
])
def test_other_specs_are_refused_untouched(tmp_path, sets, needles):
    d = tmp_path / "run"
    engine.run_spec(_spec("sample_sizes=8,16"), d, quiet=True)
    before = _tree(d)
    with pytest.raises(runner.RunDirError) as ei:
        engine.run_spec(_spec(*sets), d, quiet=True)
    msg = str(ei.value)
    assert all(n in msg for n in needles), msg
    assert "Nothing was changed" in msg and _tree(d) == before


def test_growth_via_the_cli_finds_its_directory(tmp_path, capsys, monkeypatch):
    """Without --out a run is named by its identity (the hyper-parameters outside the grid), so
    more trials go to the same directory; a directory named by the full hash of an earlier
    polarity is found too."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "toy", "--set", "sample_sizes=8", "--quiet", "--no-report"]) == 0
    assert cli.main(["run", "toy", "--set", "sample_sizes=8", "--set", "trials=3", "--quiet", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "6/6 trials complete" in out and "(2 computed now, 4 already there" in out
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name == f"toy-quick-{_spec('sample_sizes=8').identity[:10]}"
    assert _spec("sample_sizes=8").identity == _spec("sample_sizes=8", "trials=3").identity != _spec("sample_sizes=8", "lr=0.1").identity
    legacy = tmp_path / "runs" / f"toy-quick-{_spec('sample_sizes=16').hash[:10]}"
    legacy.mkdir()
    assert engine.default_run_dir(_spec("sample_sizes=16")) == Path("runs") / legacy.name


def test_a_growth_interrupted_between_spec_and_database(tmp_path):
    """spec.json is written first: if the process stops before the database's record follows,
    readers still read the run (every row fits the larger grid) and the next run completes it."""
    d = tmp_path / "run"
    engine.run_spec(_spec("sample_sizes=8"), d, quiet=True)
    grown = _spec("sample_sizes=8", "trials=3")
    growth.write_spec(d, grown, None, rundir.read_spec_file(d))
    _, _, st_ = runner.open_run(d)
    assert len(st_.completed("toy")) == 4 and st_.meta()["hparams"]["trials"] == 2
    st_.close()
    s = engine.run_spec(grown, d, quiet=True)
    assert (s.skipped_trials, s.computed_trials) == (4, 2)
    with store.Store(d / "results.sqlite", readonly=True) as st_:
        assert st_.meta()["spec_hash"] == grown.hash and st_.meta()["grown"][0]["hash"] == _spec("sample_sizes=8").hash


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ns=st.lists(st.integers(1, 24), min_size=1, max_size=3, unique=True),
       more_ns=st.lists(st.integers(1, 40), max_size=2, unique=True),
       widths=st.lists(st.sampled_from([0, 2, 5]), min_size=1, max_size=2, unique=True),
       trials=st.integers(1, 2), more=st.integers(0, 2))
def test_a_toy_trial_does_not_depend_on_the_grid(ns, more_ns, widths, trials, more):
    """The contract growing relies on (``Experiment.grid_names``): a trial computed in a larger
    grid, in jobs of other trials, has the numbers it has in the smaller one."""
    small = dataclasses.replace(TOY.presets["quick"], sample_sizes=tuple(ns), widths=tuple(widths), trials=trials,
                                conditions=("a",), epochs=2)
    large = dataclasses.replace(small, sample_sizes=tuple(dict.fromkeys(ns + more_ns)), trials=trials + more,
                                conditions=("b", "a"), widths=tuple(widths) + (7,))

    def results(hp):
        return {r.key: ([dataclasses.astuple(e) for e in r.epochs], r.extra)
                for j in TOY.jobs(hp) for r in TOY.run_job(hp, j)}

    a, b = results(small), results(large)
    assert a and all(b[k] == v for k, v in a.items())


def test_grid_names_default_and_identity():
    assert TOY.grid_names() == ("conditions", "trials", "sample_sizes", "widths")
    assert experiments.get("xor5d").grid_names() == ("conditions", "trials", "sample_sizes", "widths")
    assert spec_mod.grid_change(_spec("sample_sizes=8").to_json(), _spec("sample_sizes=8")).kind == "same"
    assert spec_mod.grid_change(_spec("sample_sizes=8").to_json(), _spec("sample_sizes=8", "trials=5")).added == 6
