"""The SQLite store: schema, one transaction per job, exactly-once inserts, frames, versions."""
from __future__ import annotations

import hashlib
import math
import sqlite3

import pytest

from polarity.experiments.base import EpochRecord, TrialKey, TrialResult
from polarity.store import EPOCH_COLUMNS, SCHEMA_VERSION, Store, StoreError


def _result(cond, n, trial, epochs=3, extra=None):
    recs = [EpochRecord(e, 1.0 / e, 0.5 + 0.1 * e, 2.0 / e, 0.4 + 0.1 * e,
                        {"switch": 0.1 * e} if extra is None else extra) for e in range(1, epochs + 1)]
    return TrialResult(TrialKey(cond, n, 0, trial), seed=100 + trial, wall_s=0.25, epochs=recs,
                       extra={"note": cond})


def test_schema_wal_and_version(tmp_path):
    p = tmp_path / "r.sqlite"
    with Store(p) as s:
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"run", "trials", "epochs"} <= tables


def _open_close(path):
    try:
        Store(path).close()
        return "ok"
    except StoreError as e:
        return str(e)


def test_processes_opening_a_new_store_together_all_succeed(tmp_path):
    """Two runs started together: one creates the schema while the other looks at the file.  Each
    must see either nothing or the whole schema, and neither may fail on the WAL switch (SQLite
    answers "locked" there without waiting).  Before the fix about 1 open in 5 failed here."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    with ctx.Pool(4) as pool:
        for i in range(12):
            p = tmp_path / f"r{i}.sqlite"
            assert pool.map(_open_close, [p] * 4) == ["ok"] * 4
            with Store(p, readonly=True) as s:
                assert s.version == SCHEMA_VERSION


def test_commit_and_frames(tmp_path):
    with Store(tmp_path / "r.sqlite") as s:
        n = s.commit_job("toy", "j1", [_result("a", 8, 0), _result("b", 8, 0, extra={"switch": float("nan"),
                                                                                       "other": 2.0})],
                         hardware={"cpu": "x"}, version="0.1", hparams={"trials": 1})
        assert n == 2
        ep = s.epochs_frame()
        assert list(ep.columns[:10]) == EPOCH_COLUMNS
        assert set(ep.columns[10:]) == {"switch", "other"}
        assert len(ep) == 6
        b = ep[ep.condition == "b"]
        assert b["switch"].isna().all() and (b["other"] == 2.0).all()
        assert ep[ep.condition == "a"]["other"].isna().all()
        assert ep["val_loss"].tolist()[:3] == [2.0, 1.0, 2.0 / 3]
        tr = s.trials_frame()
        assert tr["seed"].tolist() == [100, 100]
        assert tr["status"].tolist() == ["complete"] * 2
        assert tr["hardware"][0] == {"cpu": "x"} and tr["extra"][1] == {"note": "b"}
        assert s.completed("toy") == {TrialKey("a", 8, 0, 0), TrialKey("b", 8, 0, 0)}


def test_commit_is_exactly_once(tmp_path):
    with Store(tmp_path / "r.sqlite") as s:
        assert s.commit_job("toy", "j1", [_result("a", 8, 0)]) == 1
        assert s.commit_job("toy", "j1", [_result("a", 8, 0), _result("a", 8, 1)]) == 1
        assert s.conn.execute("SELECT count(*) FROM trials").fetchone()[0] == 2
        assert s.conn.execute("SELECT count(*), sum(n_epochs) FROM epochs").fetchone() == (2, 6)


def test_job_commit_is_one_transaction(tmp_path):
    bad = _result("a", 8, 1)
    bad.epochs[1].extra = {"switch": object()}  # not serialisable: fails mid-job
    with Store(tmp_path / "r.sqlite") as s:
        with pytest.raises(TypeError):
            s.commit_job("toy", "j1", [_result("a", 8, 0), bad])
        assert s.conn.execute("SELECT count(*) FROM trials").fetchone()[0] == 0
        assert s.conn.execute("SELECT count(*) FROM epochs").fetchone()[0] == 0
        assert s.commit_job("toy", "j1", [_result("a", 8, 0)]) == 1


def test_a_disk_full_while_the_schema_is_made_says_so(tmp_path, monkeypatch):
    """SQLite rolls a transaction back itself when the disk fills during it: the error is the
    full disk, not 'cannot rollback - no transaction is active' from rolling back again."""
    real = Store._connect

    class FullDisk:
        def __init__(self, conn):
            self._c = conn

        def __getattr__(self, name):
            return getattr(self._c, name)

        def execute(self, sql, *args):
            if sql.lstrip().upper().startswith("CREATE"):
                self._c.execute("ROLLBACK")  # what SQLite does on SQLITE_FULL inside a transaction
                raise sqlite3.OperationalError("database or disk is full")
            return self._c.execute(sql, *args)

    monkeypatch.setattr(Store, "_connect", lambda self: FullDisk(real(self)))
    with pytest.raises(StoreError, match="database or disk is full"):
        Store(tmp_path / "r.sqlite")


def test_newer_schema_is_refused_and_untouched(tmp_path):
    p = tmp_path / "r.sqlite"
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE future (x)")
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    before = hashlib.sha256(p.read_bytes()).hexdigest()
    for ro in (False, True):
        with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}.*upgrade polarity"):
            Store(p, readonly=ro)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.sqlite"]


def test_readonly_missing_database(tmp_path):
    with pytest.raises(StoreError, match="no results database"):
        Store(tmp_path / "nothing.sqlite", readonly=True)


def test_meta_round_trip(tmp_path):
    with Store(tmp_path / "r.sqlite") as s:
        s.set_meta({"spec_hash": "abc", "elapsed_s": 1.5})
        s.set_meta({"elapsed_s": 3.0})
        assert s.meta() == {"spec_hash": "abc", "elapsed_s": 3.0}
        assert math.isclose(s.meta()["elapsed_s"], 3.0)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(_floats, _floats, _floats, _floats, _floats), min_size=1, max_size=6))
def test_metrics_round_trip_exactly(tmp_path_factory, rows):
    d = tmp_path_factory.mktemp("rt")
    recs = [EpochRecord(i + 1, *r[:4], {"x": r[4]}) for i, r in enumerate(rows)]
    with Store(d / "r.sqlite") as s:
        s.commit_job("toy", "j", [TrialResult(TrialKey("a", 3, 0, 0), 1, 0.0, recs)])
        ep = s.epochs_frame()
    got = ep[["train_loss", "train_acc", "val_loss", "val_acc", "x"]].to_numpy()
    for g, r in zip(got, rows):
        for a, b in zip(g, r):
            assert (math.isnan(a) and math.isnan(b)) or a == b


def test_non_numeric_and_oddly_named_extras(tmp_path):
    recs = [EpochRecord(1, 0.1, 0.2, 0.3, 0.4, {"tag": "warmup", 'q"k': 1.5}),
            EpochRecord(2, 0.1, 0.2, 0.3, 0.4, {"tag": "main"})]
    with Store(tmp_path / "r.sqlite") as s:
        s.commit_job("toy", "j", [TrialResult(TrialKey("a", 3, 0, 0), 1, 0.0, recs)])
        ep = s.epochs_frame()
    assert ep["tag"].tolist() == ["warmup", "main"]
    assert ep['q"k'].iloc[0] == 1.5 and math.isnan(ep['q"k'].iloc[1])


def test_extras_keep_their_types_and_metrics_only_runs_read_fast(tmp_path):
    """Integer extras stay integers and text stays text (not parsed as numbers); a run without
    extras takes the float-block path and gives the same frame layout."""
    with Store(tmp_path / "r.sqlite") as s:
        s.commit_job("toy", "j1", [_result("a", 8, 0, extra={"k": 2**60 + 1, "tag": "007"})])
        ep = s.epochs_frame()
        assert str(ep["k"].dtype) == "int64" and int(ep["k"].iloc[0]) == 2**60 + 1
        assert ep["tag"].tolist() == ["007"] * 3
    with Store(tmp_path / "plain.sqlite") as s:
        s.commit_job("toy", "j1", [_result("b", 8, 1, extra={}), _result("a", 20, 0, extra={})])
        ep = s.epochs_frame()
        assert list(ep.columns) == EPOCH_COLUMNS and str(ep["epoch"].dtype) == "int64"
        assert ep[["condition", "n", "trial", "epoch"]].values.tolist() == [
            ["a", 20, 0, 1], ["a", 20, 0, 2], ["a", 20, 0, 3], ["b", 8, 1, 1], ["b", 8, 1, 2], ["b", 8, 1, 3]]
