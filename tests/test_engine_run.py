"""The runner on the tiny ``toy`` experiment: resume, exactly-once, executors give identical
numbers, failing jobs, and bad run directories (another spec, full, read-only)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from polarity import engine, experiments, store
from polarity.engine import runner

from _readonly import read_only
from _stores import drop_trials

TOY = experiments.get("toy")


def _spec(*sets, preset="quick"):
    return engine.resolve(TOY, preset, sets=list(sets))


def _frames(d):
    ep = store.epochs_frame(d)
    tr = store.trials_frame(d)[["experiment", "condition", "n", "width", "trial", "seed", "status", "extra"]]
    return ep, tr


def _tree_digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _assert_complete_once(d: Path, spec):
    trials, _ = engine.plan(TOY, spec.hp)
    c = sqlite3.connect(d / "results.sqlite")
    keys = c.execute("SELECT condition, n, width, trial FROM trials").fetchall()
    per_trial = c.execute("SELECT n_epochs FROM epochs").fetchall()
    c.close()
    assert sorted(keys) == sorted((t.condition, t.n, t.width, t.trial) for t in trials)
    assert len(keys) == len(set(keys))
    assert all(k == spec.hp.epochs for (k,) in per_trial) and len(per_trial) == len(keys)


def test_run_then_rerun_skips_everything(tmp_path):
    spec = _spec("sample_sizes=8,16,24")
    s1 = engine.run_spec(spec, tmp_path, quiet=True)
    assert (s1.total_trials, s1.computed_trials, s1.skipped_trials, s1.failures) == (12, 12, 0, [])
    assert s1.complete
    before = _frames(tmp_path)
    s2 = engine.run_spec(spec, tmp_path, quiet=True)
    assert (s2.computed_trials, s2.skipped_trials, s2.pending_jobs) == (0, 12, 0)
    after = _frames(tmp_path)
    pd.testing.assert_frame_equal(before[0], after[0], check_exact=True)
    _assert_complete_once(tmp_path, spec)
    assert (tmp_path / "spec.json").exists()
    # the per-epoch extra metric is a column of the tidy frame
    assert "switch" in before[0].columns and before[0]["switch"].between(0, 1).all()


def test_resume_after_lost_job_recomputes_identical_numbers(tmp_path):
    spec = _spec("sample_sizes=8,16,24")
    engine.run_spec(spec, tmp_path / "clean", quiet=True)
    engine.run_spec(spec, tmp_path / "cut", quiet=True)
    drop_trials(tmp_path / "cut" / "results.sqlite", "job='n=16/width=0'")
    s = engine.run_spec(spec, tmp_path / "cut", quiet=True)
    assert (s.computed_trials, s.skipped_trials, s.pending_jobs) == (4, 8, 1)
    a, b = _frames(tmp_path / "clean"), _frames(tmp_path / "cut")
    pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
    pd.testing.assert_frame_equal(a[1], b[1], check_exact=True)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun(tmp_path):
    """A real `python -m polarity run` killed with SIGKILL while jobs are in flight."""
    spec = _spec("sample_sizes=8,12,16,20,24,28", "sleep_s=0.3")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "polarity", "run", "toy", "--preset", "quick", "--set", "sample_sizes=8,12,16,20,24,28",
           "--set", "sleep_s=0.3", "--out", str(out), "--quiet", "--no-report"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = out / "results.sqlite"
    deadline = time.monotonic() + 120
    n = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                with contextlib.suppress(sqlite3.Error):
                    c = sqlite3.connect(db, timeout=1)
                    n = c.execute("SELECT count(*) FROM trials").fetchone()[0]
                    c.close()
                if n >= 4:
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    c = sqlite3.connect(db)
    n_killed = c.execute("SELECT count(*) FROM trials").fetchone()[0]
    c.close()
    assert 4 <= n_killed < 24 and n_killed % 4 == 0  # whole jobs only
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{24 - n_killed} computed now, {n_killed} already there" in rerun.stdout
    _assert_complete_once(out, spec)
    engine.run_spec(spec, tmp_path / "clean", quiet=True)
    a, b = _frames(tmp_path / "clean"), _frames(out)
    pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
    pd.testing.assert_frame_equal(a[1], b[1], check_exact=True)


@pytest.mark.slow
def test_local_and_pool_give_identical_numbers(tmp_path):
    spec = _spec("sample_sizes=8,16", "widths=0,4")
    engine.run_spec(spec, tmp_path / "local", quiet=True)
    s = engine.run_spec(spec, tmp_path / "pool", workers=2, quiet=True)
    assert s.complete and s.computed_trials == 16
    a, b = _frames(tmp_path / "local"), _frames(tmp_path / "pool")
    pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
    pd.testing.assert_frame_equal(a[1], b[1], check_exact=True)
    hw = store.trials_frame(tmp_path / "pool")["hardware"]
    assert all(h["threads"] == 1 and h["device"] == "cpu" for h in hw)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # on the worker of test_ray_cluster.py: one Ray at a time
def test_ray_gives_identical_numbers(tmp_path):
    pytest.importorskip("ray")
    spec = _spec("sample_sizes=8,16", "widths=0,4")
    engine.run_spec(spec, tmp_path / "local", quiet=True)
    try:
        s = engine.run_spec(spec, tmp_path / "ray", executor="ray", workers=2, quiet=True)
    except experiments.ExperimentError as e:
        if "timed out during startup" in str(e):  # Ray's own start-up limit on an overloaded machine
            pytest.skip(f"local Ray instance did not start: {e}")
        raise
    import ray

    assert not ray.is_initialized()  # the executor shut its local instance down
    assert s.complete and s.computed_trials == 16
    a, b = _frames(tmp_path / "local"), _frames(tmp_path / "ray")
    pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
    pd.testing.assert_frame_equal(a[1], b[1], check_exact=True)


def test_failing_job_records_nothing_for_it_and_keeps_the_rest(tmp_path):
    spec = _spec("sample_sizes=8,16,24", "fail_job=n=16/width=0")
    s = engine.run_spec(spec, tmp_path, quiet=True)
    assert [f.job for f in s.failures] == ["n=16/width=0"]
    assert s.failures[0].error.startswith("RuntimeError: toy: job n=16/width=0 fails on purpose")
    assert s.computed_trials == 8 and not s.complete
    tr = store.trials_frame(tmp_path)
    assert sorted(set(tr["n"])) == [8, 24]
    assert "fails on purpose" in (tmp_path / "errors.log").read_text()


def test_out_with_another_spec_is_refused_untouched(tmp_path):
    engine.run_spec(_spec("sample_sizes=8"), tmp_path, quiet=True)
    before = _tree_digest(tmp_path)
    with pytest.raises(runner.RunDirError) as ei:
        engine.run_spec(_spec("sample_sizes=8", "trials=3", "lr=0.25"), tmp_path, quiet=True)
    msg = str(ei.value)
    assert "different spec" in msg and "lr: 0.5 vs 0.25" in msg and str(tmp_path) in msg
    assert "grows only along conditions, trials, sample_sizes, widths" in msg  # more trials alone would grow it
    assert _tree_digest(tmp_path) == before


def test_non_run_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(runner.RunDirError, match="not a polarity run directory"):
        engine.run_spec(_spec("sample_sizes=8"), tmp_path, quiet=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_database_with_newer_schema_is_refused_untouched(tmp_path):
    spec = _spec("sample_sizes=8")
    engine.run_spec(spec, tmp_path, quiet=True)
    c = sqlite3.connect(tmp_path / "results.sqlite")
    c.execute("PRAGMA user_version = 99")
    c.commit()
    c.close()
    before = _tree_digest(tmp_path)
    with pytest.raises(store.StoreError, match="schema version 99"):
        engine.run_spec(spec, tmp_path, quiet=True)
    assert _tree_digest(tmp_path) == before


def test_full_disk_mid_run_keeps_finished_jobs(tmp_path, monkeypatch):
    """SQLite's max_page_count makes the database 'full' after the first job (or two)."""
    spec = _spec("sample_sizes=8,16,24,32", "epochs=600")  # a job's series fill a few 16 kB pages
    orig = store.Store._init_schema

    def limited(self):
        orig(self)
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        self.conn.execute(f"PRAGMA max_page_count = {pages + 10}")

    monkeypatch.setattr(store.Store, "_init_schema", limited)
    with pytest.raises(runner.RunDirError) as ei:
        engine.run_spec(spec, tmp_path, quiet=True)
    msg = str(ei.value)
    assert str(tmp_path / "results.sqlite") in msg and "full" in msg and "rerun to resume" in msg
    kept = store.trials_frame(tmp_path)
    assert 0 < len(kept) < 16 and len(kept) % 4 == 0
    monkeypatch.setattr(store.Store, "_init_schema", orig)
    s = engine.run_spec(spec, tmp_path, quiet=True)
    assert s.complete and s.skipped_trials == len(kept)
    _assert_complete_once(tmp_path, spec)


def test_read_only_directories(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    with read_only(parent):
        with pytest.raises(runner.RunDirError) as ei:
            engine.run_spec(_spec("sample_sizes=8"), parent / "run", quiet=True)
        assert str(parent / "run") in str(ei.value)
    assert list(parent.iterdir()) == []

    # a partly finished run whose directory became read-only: clear error, work kept
    spec = _spec("sample_sizes=8,16")
    d = tmp_path / "partial"
    engine.run_spec(spec, d, quiet=True)
    drop_trials(d / "results.sqlite", "n=16")
    before = _tree_digest(d)
    with read_only(d):
        with pytest.raises(runner.RunDirError) as ei:
            engine.run_spec(spec, d, quiet=True)
        assert str(d) in str(ei.value)
        assert _tree_digest(d) == before
    s = engine.run_spec(spec, d, quiet=True)
    assert s.computed_trials == 4 and s.complete


def test_prepared_directories_are_shipped_in_the_order_they_were_written(tmp_path, monkeypatch):
    """What a Ray job carries to a node that lacks the driver's cache: each prepared directory's
    files (locks left out), re-created where missing, the last-written file last."""
    from polarity.engine.executors import collect_dirs, materialise

    here, there = tmp_path / "driver", tmp_path / "node"
    src = here / "sources" / "abc"
    src.mkdir(parents=True)
    for i, name in enumerate(["model.pt", "template.pol", "meta.json", ".lock"]):
        (src / name).write_bytes(name.encode())
        os.utime(src / name, ns=(10**18 + i, 10**18 + i))
    monkeypatch.setenv("POLARITY_CACHE", str(here))
    files = collect_dirs([src, tmp_path / "elsewhere"])
    assert list(files) == ["sources/abc"] and [n for n, _ in files["sources/abc"]] == ["model.pt", "template.pol",
                                                                                      "meta.json"]
    monkeypatch.setenv("POLARITY_CACHE", str(there))
    written = []
    monkeypatch.setattr("polarity.files.atomic_write", lambda p, data: written.append(p.name) or p.parent.mkdir(
        parents=True, exist_ok=True) or p.write_bytes(data))
    assert materialise(files) == 3 and written == ["model.pt", "template.pol", "meta.json"]
    assert (there / "sources" / "abc" / "meta.json").read_bytes() == b"meta.json"
    assert materialise(files) == 0 and not (there / "sources" / "abc" / ".lock").exists()
