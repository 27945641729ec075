"""The columnar store (schema 2, issue 14): one row per trial holding its series, the same tidy
frame as schema 1's row layout for every kind of extra, schema-1 stores read and exported as
they are and upgraded in place only when asked (``polarity store upgrade``)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polarity import cli, engine, experiments, store
from polarity.store import maintenance
from polarity.experiments.base import EpochColumns, EpochRecord, ExperimentError, TrialKey, TrialResult
from _stores import drop_trials

# one pytest-xdist worker runs this module: its module-scoped fixtures do real work (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("test_store_columnar")

ROOT = Path(__file__).resolve().parents[1]
TOY = experiments.get("toy")


def _bench():
    """benchmarks/store.py: schema 1's commit as polarity 0.1 wrote it (the baseline)."""
    spec = importlib.util.spec_from_file_location("bench_store", ROOT / "benchmarks" / "store.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BENCH = _bench()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _write_v1(path: Path, jobs: dict[str, list[TrialResult]], hardware=None, hparams=None) -> None:
    c = BENCH.open_rows(path)
    for key, results in jobs.items():
        BENCH.commit_rows(c, "toy", key, results, json.dumps(hardware or {}), json.dumps(hparams or {}))
    c.close()


def _write_v2(path: Path, jobs: dict[str, list[TrialResult]]) -> None:
    with store.Store(path) as s:
        for key, results in jobs.items():
            s.commit_job("toy", key, results)


def _frames_of_both(tmp: Path, jobs) -> tuple[pd.DataFrame, pd.DataFrame]:
    _write_v1(tmp / "v1.sqlite", jobs)
    _write_v2(tmp / "v2.sqlite", jobs)
    with store.Store(tmp / "v1.sqlite", readonly=True) as a, store.Store(tmp / "v2.sqlite", readonly=True) as b:
        assert (a.version, b.version) == (1, store.SCHEMA_VERSION)
        return a.epochs_frame(), b.epochs_frame()


def _trial(cond, n, trial, extras, metrics=None):
    recs = [EpochRecord(e + 1, *(metrics[e] if metrics else (1.0 / (e + 1), 0.5, 2.0 / (e + 1), 0.25)), x)
            for e, x in enumerate(extras)]
    return TrialResult(TrialKey(cond, n, 0, trial), seed=trial, wall_s=0.5, epochs=recs, extra={"k": cond})


# ----------------------------------------------------------------------------- the same frame

def test_every_kind_of_extra_gives_schema_1s_frame(tmp_path):
    jobs = {
        "j1": [_trial("a", 8, 0, [{"f": 0.5, "i": 3, "s": "warm", "b": True, "mix": 1, "big": 2**60 + 1,
                                   "nested": [1, 2], "inf": math.inf},
                                  {"f": math.nan, "i": 4, "s": "main", "b": False, "mix": 2.5, "big": 2**60 + 3,
                                   "nested": {"x": 1}, "inf": -math.inf},
                                  {"f": 0.25, "i": 5, "b": True, "mix": None, "big": -7}]),
               _trial("b", 8, 0, [{"f": 1.0, "i": 1, "s": "x", "gap": 1}, {}, {"f": 2.0, "i": 2, "s": "y"}])],
        "j2": [_trial("a", 16, 1, [{"s": 7, "i": 9}, {"s": "007", "i": 10}, {"s": None, "i": 11}]),
               _trial("b", 16, 1, [None, None, None])],
    }
    v1, v2 = _frames_of_both(tmp_path, jobs)
    pd.testing.assert_frame_equal(v1, v2, check_exact=True)
    assert v2["i"].dtype == "float64"  # integers with gaps (trial b/16 has none) are numbers with NaN
    ints = tmp_path / "ints"
    ints.mkdir()
    a, b = _frames_of_both(ints, {"j": [_trial("a", 8, 0, [{"i": 2**62 + 1}] * 2)]})
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert b["i"].dtype == "int64" and b["i"].tolist() == [2**62 + 1] * 2  # everywhere: int64, exact
    assert v2.loc[(v2.condition == "a") & (v2.n == 8), "nested"].tolist()[:2] == ["[1,2]", '{"x":1}']
    assert list(v2.columns) == store.EPOCH_COLUMNS + sorted(["f", "i", "s", "b", "mix", "big", "nested", "inf",
                                                             "gap"])


def test_metrics_only_and_empty_runs(tmp_path):
    jobs = {"j": [_trial("b", 8, 1, [{}] * 4), _trial("a", 20, 0, [{}] * 2)]}
    v1, v2 = _frames_of_both(tmp_path, jobs)
    pd.testing.assert_frame_equal(v1, v2, check_exact=True)
    assert list(v2.columns) == store.EPOCH_COLUMNS and len(v2) == 6
    _write_v1(tmp_path / "e1.sqlite", {})
    _write_v2(tmp_path / "e2.sqlite", {})
    with store.Store(tmp_path / "e1.sqlite", readonly=True) as a, store.Store(tmp_path / "e2.sqlite") as b:
        pd.testing.assert_frame_equal(a.epochs_frame(), b.epochs_frame(), check_exact=True)


_value = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**63, 2**63 - 1), st.booleans(),
                   st.none(), st.text(alphabet="abc01 ", max_size=3), st.lists(st.integers(-5, 5), max_size=2))
_epoch_extras = st.dictionaries(st.sampled_from(["k1", "k2", "switch/fc1.weight"]), _value, max_size=3)


@settings(max_examples=60, deadline=None)
@given(trials=st.lists(st.lists(_epoch_extras, min_size=0, max_size=4), min_size=1, max_size=4),
       metrics=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=16, max_size=16))
def test_any_extras_give_schema_1s_frame(tmp_path_factory, trials, metrics):
    d = tmp_path_factory.mktemp("prop")
    m = [tuple(metrics[4 * (e % 4):4 * (e % 4) + 4]) for e in range(4)]
    jobs = {f"j{i}": [_trial("ab"[i % 2], 8 + i, i, ex, m)] for i, ex in enumerate(trials)}
    v1, v2 = _frames_of_both(d, jobs)
    pd.testing.assert_frame_equal(v1, v2, check_exact=True)


def test_epochs_are_sorted_and_a_repeated_epoch_is_an_error(tmp_path):
    r = _trial("a", 8, 0, [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}])
    r.epochs.reverse()
    _write_v2(tmp_path / "r.sqlite", {"j": [r]})
    with store.Store(tmp_path / "r.sqlite") as s:
        df = s.epochs_frame()
    assert df["epoch"].tolist() == [1, 2, 3] and df["x"].tolist() == [1.0, 2.0, 3.0]
    r.epochs[0].epoch = 1
    with pytest.raises(ExperimentError, match="epoch 1 is recorded twice"):
        store.pack_trial(r)


_column = st.sampled_from([np.float32, np.float64, np.int64]).flatmap(lambda t: st.lists(
    st.floats(allow_nan=True, allow_infinity=True, width=32) if t != np.int64 else st.integers(-2**40, 2**40),
    min_size=5, max_size=5).map(lambda v: np.array(v, dtype=t)))


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(range(1, 6)), metrics=st.lists(_column.filter(lambda a: a.dtype.kind == "f"),
       min_size=4, max_size=4), extra=st.dictionaries(st.sampled_from(["k1", "switch/fc1.weight"]), _column))
def test_epoch_columns_pack_as_the_records_they_stand_for(order, metrics, extra):
    cols = EpochColumns(np.array(order), *metrics, extra)
    key = TrialKey("a", 8, 0, 0)
    assert store.pack_trial(TrialResult(key, 1, 0.5, cols)) == store.pack_trial(TrialResult(key, 1, 0.5, list(cols)))
    assert repr([cols[i] for i in range(-5, 5)]) == repr(list(cols) * 2)  # repr: NaN is NaN
    assert repr(cols[1:3]) == repr(list(cols)[1:3])
    with pytest.raises(ExperimentError, match="epoch 1 is recorded twice"):
        store.pack_trial(TrialResult(key, 1, 0.5, EpochColumns(np.ones(5, np.int64), *metrics, extra)))
    with pytest.raises(ExperimentError, match="val_acc not 5 epochs long"):
        EpochColumns(np.array(order), *metrics[:3], metrics[3][:4])


def test_epoch_columns_are_packed_without_a_record_per_epoch(monkeypatch):
    cols = EpochColumns(np.arange(1, 4), *np.eye(4, 3), {"x": np.ones(3)})
    want = store.pack_trial(TrialResult(TrialKey("a", 8, 0, 0), 1, 0.5, list(cols)))
    for name in ("__iter__", "__getitem__"):
        monkeypatch.setattr(EpochColumns, name, lambda *a: pytest.fail("a record was built"))
    assert store.pack_trial(TrialResult(TrialKey("a", 8, 0, 0), 1, 0.5, cols)) == want


# ----------------------------------------------------------------------------- the layout

def test_one_row_per_trial_narrowed_losslessly(tmp_path):
    f32 = [float(np.float32(x)) for x in (0.1, 0.7, 1e-3)]
    r = TrialResult(TrialKey("a", 8, 0, 0), 3, 0.1,
                    [EpochRecord(e + 1, f32[e], 0.1 * (e + 1), math.nan, -0.0, {"n": 40 * e, "f": f32[e]})
                     for e in range(3)])
    _write_v2(tmp_path / "r.sqlite", {"j": [r]})
    c = sqlite3.connect(tmp_path / "r.sqlite")
    rows = c.execute("SELECT n_epochs, epoch, train_loss, train_acc, val_loss, val_acc, extra FROM epochs").fetchall()
    c.close()
    assert len(rows) == 1
    n, epoch, tl, ta, vl, va, extra = rows[0]
    assert n == 3
    assert [b[:4] for b in (epoch, tl, ta, vl, va)] == [b"A|i1", b"A<f4", b"A<f8", b"A<f4", b"A<f4"]
    assert store.decode_series(tl).tolist() == f32 and store.decode_series(ta).tolist() == [0.1, 0.2, 0.1 * 3]
    assert math.isnan(store.decode_series(vl)[0]) and math.copysign(1, store.decode_series(va)[0]) == -1
    ex = store.decode_extras(extra)
    assert ex["n"].dtype == np.int64 and ex["n"].tolist() == [0, 40, 80] and ex["f"].tolist() == f32
    # the documented recipe reads a series with numpy alone
    assert np.frombuffer(tl, tl[1:4].decode(), offset=4).tolist() == f32


def test_a_job_is_one_transaction(tmp_path):
    bad = _trial("a", 8, 1, [{"x": object()}])
    with store.Store(tmp_path / "r.sqlite") as s:
        with pytest.raises(TypeError):
            s.commit_job("toy", "j", [_trial("a", 8, 0, [{}]), bad])
        assert s.conn.execute("SELECT (SELECT count(*) FROM trials), (SELECT count(*) FROM epochs)").fetchone() == (0, 0)


@pytest.mark.parametrize("user_version", [1, 2])
def test_foreign_database_with_our_version_is_refused(tmp_path, user_version):
    p = tmp_path / "x.sqlite"
    c = sqlite3.connect(p)
    c.executescript(store._DDL_V1 if user_version == 2 else store._DDL)  # the other version's tables
    c.execute(f"PRAGMA user_version = {user_version}")
    c.commit()
    c.close()
    h = _sha(p)
    for ro in (True, False):
        with pytest.raises(store.StoreError, match="not a polarity results database.*other columns: epochs"):
            store.Store(p, readonly=ro)
    assert _sha(p) == h


# ----------------------------------------------------------------------------- schema-1 run directories

def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _as_schema_1(run: Path) -> None:
    """Rewrite a finished run's database as polarity 0.1 (schema 1) would have written it."""
    db = run / store.FILENAME
    c = sqlite3.connect(db)
    meta = c.execute("SELECT key, value FROM run").fetchall()
    rows = c.execute("SELECT t.condition, t.n, t.width, t.trial, t.seed, t.wall_s, t.hardware, t.hparams, t.extra,"
                     " t.job, e.epoch, e.train_loss, e.train_acc, e.val_loss, e.val_acc, e.extra"
                     " FROM trials t JOIN epochs e ON e.trial_id = t.id ORDER BY t.id").fetchall()
    c.close()
    jobs: dict[str, list] = {}
    hw = hp = None
    for cond, n, w, t, seed, wall, hw, hp, extra, job, *series in rows:
        ep, *ms = [store.decode_series(b).tolist() for b in series[:5]]
        ex = store.decode_extras(series[5])
        recs = [EpochRecord(e, *(m[i] for m in ms), {k: (v[i] if isinstance(v, list) else v[i].item())
                                                       for k, v in ex.items()}) for i, e in enumerate(ep)]
        jobs.setdefault(job, []).append(TrialResult(TrialKey(cond, n, w, t), seed, wall, recs, json.loads(extra)))
    for p in run.glob(store.FILENAME + "*"):
        p.unlink()
    c = BENCH.open_rows(db)
    c.executemany("INSERT INTO run VALUES (?, ?)", meta)
    for job, results in jobs.items():
        BENCH.commit_rows(c, "toy", job, results, hw, hp)
    c.close()


@pytest.fixture
def v1_run(tmp_path):
    """A toy run as polarity 0.1 left it, and the export of the same run made with schema 2."""
    d = tmp_path / "run"
    engine.run_spec(engine.resolve(TOY, "quick", sets=["sample_sizes=8,16"]), d, quiet=True)
    want = store.epochs_frame(d)
    trials = store.trials_frame(d)
    _as_schema_1(d)
    return d, want, trials


def test_schema_1_run_is_read_exported_and_refused_for_writing_untouched(v1_run, tmp_path, capsys):
    d, want, _ = v1_run
    h = _sha(d / store.FILENAME)
    with store.Store(d / store.FILENAME, readonly=True) as s:
        assert s.version == 1
        pd.testing.assert_frame_equal(s.epochs_frame(), want, check_exact=True)
    code, _, err = _cli(capsys, "export", d, "--csv", tmp_path / "e.csv")
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "e.csv"), pd.read_csv(_csv(want, tmp_path / "w.csv")))
    assert _cli(capsys, "report", d)[0] == 0
    code, _, err = _cli(capsys, "run", "toy", "--set", "sample_sizes=8,16", "--out", d, "--quiet", "--no-report")
    assert code == 2 and "schema 1" in err and f"polarity store upgrade {d}" in err and "nothing was changed" in err
    with pytest.raises(store.StoreError, match="store upgrade"):
        store.Store(d / store.FILENAME)
    assert _sha(d / store.FILENAME) == h


def _csv(df, p):
    df.to_csv(p, index=False)
    return p


def test_store_upgrade_converts_in_place_then_the_run_resumes(v1_run, capsys, monkeypatch):
    d, want, trials = v1_run
    before = store.trials_frame(d)
    # an upgrade that fails half-way leaves schema 1 as it was
    real = store.pack_trial
    calls = []

    def failing(r):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(r)

    monkeypatch.setattr(maintenance, "pack_trial", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        engine.upgrade_run(d)
    monkeypatch.setattr(maintenance, "pack_trial", real)
    with store.Store(d / store.FILENAME, readonly=True) as s:
        assert s.version == 1
        pd.testing.assert_frame_equal(s.epochs_frame(), want, check_exact=True)

    code, out, err = _cli(capsys, "store", "upgrade", d)
    assert code == 0, err
    assert f"schema 1 -> {store.SCHEMA_VERSION}" in out and "8 trials" in out
    with store.Store(d / store.FILENAME, readonly=True) as s:
        assert s.version == store.SCHEMA_VERSION
        pd.testing.assert_frame_equal(s.epochs_frame(), want, check_exact=True)
        pd.testing.assert_frame_equal(s.trials_frame(), before, check_exact=True)
    assert _cli(capsys, "store", "upgrade", d)[1].endswith("nothing to do\n")
    # new results go into the upgraded store
    drop_trials(d / store.FILENAME, "n=16")
    s = engine.run_spec(engine.resolve(TOY, "quick", sets=["sample_sizes=8,16"]), d, quiet=True)
    assert s.complete and s.computed_trials == 4
    pd.testing.assert_frame_equal(store.epochs_frame(d), want, check_exact=True)


def test_upgrade_refuses_a_running_run_and_newer_or_foreign_stores(v1_run, tmp_path, capsys):
    d, _, _ = v1_run
    lock = engine.runner.RunLock(d)
    lock.acquire(["polarity", "run", "toy"])
    try:
        code, _, err = _cli(capsys, "store", "upgrade", d)
        assert code == 2 and "in use by another polarity run" in err
    finally:
        lock.release()
    c = sqlite3.connect(d / store.FILENAME)
    c.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    h = _sha(d / store.FILENAME)
    code, _, err = _cli(capsys, "store", "upgrade", d)
    assert code == 2 and "newer than this polarity's" in err and _sha(d / store.FILENAME) == h


# ----------------------------------------------------------------------------- issue 21: schema 3

def _as_schema_2(run: Path) -> None:
    """A finished run's database as polarity wrote it between issues 14 and 21 (no digests)."""
    c = sqlite3.connect(run / store.FILENAME)
    c.execute("ALTER TABLE trials DROP COLUMN digest")
    c.execute("DELETE FROM run WHERE key = 'trial_count'")
    c.execute("PRAGMA user_version = 2")
    c.commit()
    c.close()


def test_schema_2_is_read_as_it_is_and_upgraded_with_digests(tmp_path, capsys):
    d = tmp_path / "run"
    engine.run_spec(engine.resolve(TOY, "quick", sets=["sample_sizes=8,16"]), d, quiet=True)
    want, trials = store.epochs_frame(d), store.trials_frame(d)
    _as_schema_2(d)
    with store.Store(d / store.FILENAME, readonly=True) as s:
        assert s.version == 2
        pd.testing.assert_frame_equal(s.epochs_frame(), want, check_exact=True)
    code, _, err = _cli(capsys, "run", "toy", "--set", "sample_sizes=8,16", "--out", d, "--quiet", "--no-report")
    assert code == 2 and "schema 2" in err and "store upgrade" in err
    code, out, err = _cli(capsys, "store", "upgrade", d)
    assert code == 0 and "schema 2 -> 3, 8 trials" in out, err
    with store.Store(d / store.FILENAME, readonly=True) as s:
        s.verify()
        pd.testing.assert_frame_equal(s.epochs_frame(), want, check_exact=True)
        pd.testing.assert_frame_equal(s.trials_frame(), trials, check_exact=True)
    s = engine.run_spec(engine.resolve(TOY, "quick", sets=["sample_sizes=8,16"]), d, quiet=True)
    assert s.complete and s.computed_trials == 0


def test_upgrade_checks_its_room_first(v1_run, capsys, monkeypatch):
    d, _, _ = v1_run
    h = _sha(d / store.FILENAME)
    monkeypatch.setattr(maintenance, "_free_bytes", lambda directory: 1000)
    code, _, err = _cli(capsys, "store", "upgrade", d)
    assert code == 2 and "needs about" in err and "3x the store" in err and "Nothing was changed" in err
    assert _sha(d / store.FILENAME) == h


def test_upgrade_whose_compaction_fails_says_the_store_is_upgraded(v1_run, capsys, monkeypatch):
    d, want, _ = v1_run

    def full(conn):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(maintenance, "_compact", full)
    code, _, err = _cli(capsys, "store", "upgrade", d)
    assert code == 2 and err.count("\n") == 1, err
    assert "IS upgraded to schema 3" in err and "reads as it is" in err and "compacting it afterwards failed" in err
    assert f"polarity store upgrade {d}` again to compact it" in err
    with store.Store(d / store.FILENAME, readonly=True) as s:
        assert s.version == store.SCHEMA_VERSION
        pd.testing.assert_frame_equal(s.epochs_frame(), want, check_exact=True)
    monkeypatch.undo()
    code, out, err = _cli(capsys, "store", "upgrade", d)
    assert code == 0 and "already has schema 3; compacted" in out, err
    assert _cli(capsys, "store", "upgrade", d)[1].endswith("nothing to do\n")


def test_upgrade_does_not_count_an_orphan_epochs_row_as_a_trial(v1_run, capsys):
    d, want, _ = v1_run
    c = sqlite3.connect(d / store.FILENAME)
    c.execute("INSERT INTO epochs(trial_id, epoch, train_loss, train_acc, val_loss, val_acc, extra)"
              " VALUES (999, 1, 0.5, 0.5, 0.5, 0.5, NULL)")
    c.commit()
    c.close()
    code, out, err = _cli(capsys, "store", "upgrade", d)
    assert code == 0 and "8 trials, 1 epochs rows of no trial dropped" in out, err
    pd.testing.assert_frame_equal(store.epochs_frame(d), want, check_exact=True)


def _export_and_upgrade_refuse(capsys, d, tmp_path, *needles):
    """`export` and `store upgrade` each refuse the run ``d`` in one line holding every needle,
    and neither writes anything."""
    h = _sha(d / store.FILENAME)
    for argv in (["export", d, "--csv", tmp_path / "e.csv"], ["store", "upgrade", d]):
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and err.startswith("polarity: error: ") and err.count("\n") == 1, err
        assert all(x in err for x in needles), err
    assert _sha(d / store.FILENAME) == h and not (tmp_path / "e.csv").exists()


@pytest.mark.parametrize("column, value, needle", [
    ("extra", "{not json", "its extra is '{not json', not a JSON object"),
    ("extra", "[1, 2]", "not a JSON object"),
    ("train_loss", "low", "its train_loss is 'low', not a number"),
])
def test_a_damaged_schema_1_row_is_one_line_naming_the_trial(v1_run, tmp_path, capsys, column, value, needle):
    d, _, _ = v1_run
    c = sqlite3.connect(d / store.FILENAME)
    tid, cond, n, t = c.execute("SELECT id, condition, n, trial FROM trials ORDER BY id LIMIT 1 OFFSET 5").fetchone()
    c.execute(f"UPDATE epochs SET {column} = ? WHERE trial_id = ? AND epoch = 2", (value, tid))
    c.commit()
    c.close()
    _export_and_upgrade_refuse(capsys, d, tmp_path, f"trial {cond!r} n={n}", f"trial={t}", "epoch 2", needle)


@pytest.mark.parametrize("schema", [1, 2])
@pytest.mark.parametrize("column, value, needle", [
    ("extra", "{bad", "its extra is '{bad', not a JSON object"),
    ("hardware", "[1]", "its hardware is '[1]', not a JSON object"),
    ("wall_s", "slow", "its wall_s is 'slow', not a number"),
    ("n", "x", "its n is 'x', not an integer"),
])
def test_a_damaged_trials_row_of_an_old_schema_is_refused_not_sealed(v1_run, tmp_path, capsys, schema, column,
                                                                      value, needle):
    """A schema-1 or -2 trials row that cannot be read (its extra, hardware, wall time or key)
    is one line naming the trial on export and on upgrade; `store upgrade` used to convert it,
    sealing the damage under a digest that matches it (export then failed, repair found nothing)."""
    d, _, _ = v1_run
    if schema == 2:
        code, _, err = _cli(capsys, "store", "upgrade", d)
        assert code == 0, err
        c2 = sqlite3.connect(d / store.FILENAME)  # schema 3 back to 2: no digests, no count
        c2.execute("ALTER TABLE trials DROP COLUMN digest")
        c2.execute("DELETE FROM run WHERE key = 'trial_count'")
        c2.execute("PRAGMA user_version = 2")
        c2.commit()
        c2.close()
    c = sqlite3.connect(d / store.FILENAME)
    tid, cond = c.execute("SELECT id, condition FROM trials ORDER BY id LIMIT 1 OFFSET 3").fetchone()
    c.execute(f"UPDATE trials SET {column} = ? WHERE id = ?", (value, tid))
    c.commit()
    c.close()
    h = _sha(d / store.FILENAME)
    for argv in (["export", d, "--csv", tmp_path / "e.csv", "--trials-csv", tmp_path / "t.csv"],
                 ["store", "upgrade", d]):
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and err.startswith("polarity: error: ") and err.count("\n") == 1, err
        assert f"trial {cond!r}" in err and f"(row {tid})" in err and needle in err, err
    assert _sha(d / store.FILENAME) == h and not (tmp_path / "e.csv").exists()
    # the way out: `store repair` removes exactly that trial, the store upgrades, a rerun recomputes it
    code, out, err = _cli(capsys, "store", "repair", d)
    assert code == 0 and f"removed: trial {cond!r}" in out and "1 problem(s) removed, 7 trials kept" in out, err
    code, out, err = _cli(capsys, "store", "upgrade", d)
    assert code == 0 and "7 trials" in out, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished toy run (schema 3) and its tidy frame, copied by the tests that damage it."""
    d = tmp_path_factory.mktemp("finished") / "run"
    engine.run_spec(engine.resolve(TOY, "quick", sets=["sample_sizes=8,16"]), d, quiet=True)
    return d, store.epochs_frame(d)


@pytest.mark.parametrize("damage, needle", [
    ("UPDATE epochs SET val_acc = CAST(val_acc AS TEXT) WHERE trial_id = ?", "its val_acc is a TEXT value of"),
    ("UPDATE epochs SET val_acc = substr(val_acc, 1, length(val_acc) - 4) WHERE trial_id = ?",
     "its val_acc series cannot be decoded"),
    ("UPDATE epochs SET epoch = X'41' || substr(epoch, 2) WHERE trial_id = ?", "its epoch is a TEXT value of"),
    ("UPDATE epochs SET n_epochs = n_epochs + 1 WHERE trial_id = ?", "its epoch series holds 5 values for 6 epochs"),
    ("UPDATE epochs SET extra = substr(extra, 1, length(extra) - 1) WHERE trial_id = ?", "its extra cannot be decoded"),
])
def test_a_damaged_schema_2_epochs_row_is_refused_not_sealed_and_repair_removes_it(finished_run, tmp_path, capsys,
                                                                                  damage, needle):
    """Schema 2's series of one trial that cannot be decoded: export and upgrade refuse it in one
    line naming the trial (the upgrade used to seal it under a digest that matched it, and export
    then failed with the decoder's error while repair found nothing); repair removes that trial
    alone, the store upgrades, and the rerun recomputes it as it was."""
    d = tmp_path / "run"
    shutil.copytree(finished_run[0], d)
    _as_schema_2(d)
    c = sqlite3.connect(d / store.FILENAME)
    tid, cond = c.execute("SELECT id, condition FROM trials ORDER BY id LIMIT 1 OFFSET 2").fetchone()
    c.execute(damage, (tid,))
    c.commit()
    c.close()
    _export_and_upgrade_refuse(capsys, d, tmp_path, f"trial {cond!r}", f"(row {tid})", needle,
                               "the epochs row is damaged", f"polarity store repair {d}")
    code, out, err = _cli(capsys, "store", "repair", d)
    assert code == 0 and out.count("removed: ") == 1 and f"(row {tid})" in out and "7 trials kept" in out, err
    code, out, err = _cli(capsys, "store", "upgrade", d)
    assert code == 0 and "schema 2 -> 3, 7 trials" in out, err
    s = engine.run_spec(engine.resolve(TOY, "quick", sets=["sample_sizes=8,16"]), d, quiet=True)
    assert s.complete and s.computed_trials == 1
    pd.testing.assert_frame_equal(store.epochs_frame(d), finished_run[1], check_exact=True)


def test_the_room_asked_for_after_a_failed_compaction_is_the_room_checked(v1_run, capsys, monkeypatch):
    """The advice after a full disk and the check of the next upgrade name one number (they
    used to say 2x and check 3x the store)."""
    d, _, _ = v1_run

    def full(conn):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(maintenance, "_size", lambda path: 10_000_000)
    monkeypatch.setattr(maintenance, "_compact", full)
    code, _, err = _cli(capsys, "store", "upgrade", d)
    asked = re.search(r"Free about ([\d.]+ MB)", err)
    assert code == 2 and asked, err
    monkeypatch.setattr(maintenance, "_free_bytes", lambda directory: 0)
    code, _, err = _cli(capsys, "store", "upgrade", d)
    assert code == 2 and f"needs about {asked.group(1)} free" in err, err
    assert asked.group(1) == f"{maintenance.UPGRADE_ROOM * 10:.1f} MB"
