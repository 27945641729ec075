"""The results store: one SQLite file per run (``DIR/results.sqlite``, WAL mode).

Schema (``PRAGMA user_version`` = ``SCHEMA_VERSION`` = 1)::

    run      (key TEXT PRIMARY KEY, value TEXT)          -- run metadata as JSON values:
             -- spec_hash, experiment, preset, hparams, created, polarity_version, elapsed_s
    trials   (id INTEGER PRIMARY KEY,
              experiment TEXT, condition TEXT, n INTEGER, width INTEGER, trial INTEGER,
              seed INTEGER,        -- trial_seed(hp.seed, trial): shared by the trial's conditions
              status TEXT,         -- 'complete' (only finished jobs are written)
              wall_s REAL,         -- compute seconds attributed to this trial by its job
              hardware TEXT,       -- JSON: host, platform, cpu, threads, device, gpu, torch, python
              version TEXT,        -- polarity version that computed the trial
              hparams TEXT,        -- JSON: the run's full hparams
              extra TEXT,          -- JSON: trial-level data from the experiment
              job TEXT,            -- key of the job that computed it
              finished_at TEXT,    -- UTC ISO-8601 time of the commit
              UNIQUE (experiment, condition, n, width, trial))
    epochs   (trial_id INTEGER REFERENCES trials(id), epoch INTEGER,  -- epoch is 1-based
              train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL,
              extra TEXT,          -- JSON: per-epoch extra metrics, e.g. {"switch/fc1.weight": 0.01}
              PRIMARY KEY (trial_id, epoch))

A finished job's trials and epochs are inserted in ONE transaction, so an interrupted run loses at
most the jobs in flight and never holds a partial trial.  Only the driver process writes.  A NaN
metric is stored as NULL and reads back as NaN.

Reading: ``Store.epochs_frame()`` is the tidy export (one row per trial and epoch, columns
``experiment, condition, n, width, trial, epoch, train_loss, train_acc, val_loss, val_acc`` plus
one column per per-epoch extra key); ``Store.trials_frame()`` has one row per trial.

Opening is safe for the data: a database written by a newer polarity (higher ``user_version``)
and a database without polarity's schema (another application's file, whatever its
``user_version``) are refused with a clear error and left untouched.  A read-only open sees every
committed trial or refuses: a WAL database in a read-only directory without its ``-shm`` index
(a killed run, archived or mounted read-only) cannot be read in place, so it is read through a
temporary copy of the database and its WAL.  ``Store.check_writable`` finds a read-only database
before anything is computed.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .experiments.base import ExperimentError, TrialKey, TrialResult, gc_paused

SCHEMA_VERSION = 1
FILENAME = "results.sqlite"
EPOCH_COLUMNS = ["experiment", "condition", "n", "width", "trial", "epoch",
                 "train_loss", "train_acc", "val_loss", "val_acc"]
TRIAL_COLUMNS = ["experiment", "condition", "n", "width", "trial", "seed", "status", "wall_s",
                 "hardware", "version", "job", "finished_at", "extra"]

_DDL = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL,
    condition TEXT NOT NULL,
    n INTEGER NOT NULL,
    width INTEGER NOT NULL,
    trial INTEGER NOT NULL,
    seed INTEGER,
    status TEXT NOT NULL,
    wall_s REAL,
    hardware TEXT,
    version TEXT,
    hparams TEXT,
    extra TEXT,
    job TEXT,
    finished_at TEXT,
    UNIQUE (experiment, condition, n, width, trial)
);
CREATE TABLE IF NOT EXISTS epochs (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    train_loss REAL,
    train_acc REAL,
    val_loss REAL,
    val_acc REAL,
    extra TEXT,
    PRIMARY KEY (trial_id, epoch)
);
"""


class StoreError(ExperimentError):
    """The store cannot be opened or written (newer schema, read-only or full directory, ...).
    ``readonly``: the cause is a database or directory that cannot be written (a rerun fails
    the same way until it is made writable)."""

    def __init__(self, message: str, *, readonly: bool = False):
        super().__init__(message)
        self.readonly = readonly


def _is_readonly(e: sqlite3.Error) -> bool:
    name = getattr(e, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "readonly" in str(e)


def _reference_schema() -> dict[str, list[str]]:
    conn = sqlite3.connect(":memory:")
    conn.executescript(_DDL)
    out = _tables(conn)
    conn.close()
    return out


def _tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Table name -> column names (SQLite's own tables left out)."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in names}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _num(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return None if math.isnan(v) else v


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


_KEYS: dict[str, str] = {}


def _scalar_json(v: Any) -> str:
    if hasattr(v, "item"):  # numpy / torch scalars
        v = v.item()
    if type(v) is float:
        if v != v:
            return "null"  # NaN
        if v in (math.inf, -math.inf):
            return "1e999" if v > 0 else "-1e999"  # parsed back as +-inf by json and SQLite
        return repr(v)  # shortest round-trip representation
    if type(v) is int:
        return str(v)
    return json.dumps(v, sort_keys=True, default=_json_default)


def _extra_json(extra: Mapping[str, Any] | None) -> str | None:
    """Per-epoch extras as compact JSON (hand-written: this runs once per stored epoch)."""
    if not extra:
        return None
    parts = []
    for k in sorted(extra):
        kj = _KEYS.get(k)
        if kj is None:
            kj = _KEYS.setdefault(k, json.dumps(str(k)))
        parts.append(f"{kj}:{_scalar_json(extra[k])}")
    return "{" + ",".join(parts) + "}"


def _f(x: Any) -> float | None:
    return x if type(x) is float else _num(x)  # NaN is stored as NULL by SQLite


class Store:
    """One run's SQLite database.  ``readonly=True`` never writes (export / report)."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._tmp: tempfile.TemporaryDirectory | None = None  # a read-only WAL database's copy
        if readonly and not self.path.exists():
            raise StoreError(f"no results database at {self.path}")
        try:
            self.conn = self._connect()
            try:
                self._check_version()
                self._check_schema()
                if not readonly:
                    self._init_schema()
            except BaseException:
                self.close()
                raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot open results database {self.path}: {e}",
                             readonly=not readonly and _is_readonly(e)) from None

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if not self.readonly:
            return sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        d = self.path.resolve().parent
        if os.access(self.path, os.W_OK) and os.access(d, os.W_OK | os.X_OK):
            # a plain connection (never used to write) lets SQLite tidy the WAL files on close
            return sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        uri = f"file:{self.path.resolve().as_posix()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        # a WAL database in a read-only directory without its -shm index: SQLite cannot read the
        # WAL in place, and `immutable=1` would silently ignore the trials committed there
        wal = Path(f"{self.path}-wal")
        if not wal.exists() or wal.stat().st_size == 0:
            return sqlite3.connect(uri + "&immutable=1", uri=True)  # nothing in a WAL to miss
        try:
            self._tmp = tempfile.TemporaryDirectory(prefix="polarity-readonly-")
            copy = Path(self._tmp.name) / self.path.name
            shutil.copyfile(self.path, copy)
            shutil.copyfile(wal, f"{copy}-wal")
        except OSError as e:
            self.close()
            raise StoreError(
                f"{self.path} keeps committed results in {wal.name}, which SQLite cannot read in place "
                f"in a read-only directory without {self.path.name}-shm, and copying them to a temporary "
                f"directory failed ({e.strerror or e}); make {d} writable, or copy the run directory "
                "somewhere writable, and read it there") from None
        return sqlite3.connect(copy, timeout=30.0, isolation_level=None)

    def _check_version(self) -> None:
        (v,) = self.conn.execute("PRAGMA user_version").fetchone()
        if v > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {v}, newer than this polarity's "
                f"{SCHEMA_VERSION}; upgrade polarity to read or extend it (nothing was changed)")
        self.version = v

    def _check_schema(self) -> None:
        """Refuse (untouched) a database that is not polarity's, whatever its user_version; a new,
        empty database is fine (a reader sees an empty run)."""
        tables = _tables(self.conn)
        if not tables and self.version == 0:
            if self.readonly:  # e.g. a run killed before its schema was committed
                self.close()
                self.conn = sqlite3.connect(":memory:", isolation_level=None)
                self.conn.executescript(_DDL)
            return
        want = _REFERENCE if self.version else {}
        if tables != want:
            other = sorted(set(tables) - set(want))
            missing = sorted(set(want) - set(tables))
            changed = sorted(t for t in set(tables) & set(want) if tables[t] != want[t])
            what = "; ".join(x for x in (
                f"user_version {self.version}",
                f"tables polarity does not know: {', '.join(other)}" if other else "",
                f"missing tables: {', '.join(missing)}" if missing else "",
                f"tables with other columns: {', '.join(changed)}" if changed else "") if x)
            raise StoreError(f"{self.path} is not a polarity results database ({what}); nothing was "
                             "changed: move it away or choose another run directory")

    def _init_schema(self) -> None:
        c = self.conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        if self.version == 0:
            c.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _DDL.strip().split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            self.version = SCHEMA_VERSION

    def check_writable(self) -> None:
        """Raise ``StoreError(readonly=True)`` now, before any computation, if a commit would
        fail because the database or its directory cannot be written (a statement that would
        write no row still needs write access, so nothing changes)."""
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("UPDATE run SET value = value WHERE 0")
            finally:
                if c.in_transaction:
                    c.execute("ROLLBACK")
        except sqlite3.Error as e:
            raise StoreError(f"results database {self.path} cannot be written ({e}); make it and its "
                             "directory writable, then rerun", readonly=True) from None

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- run metadata ----------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        rows = self.conn.execute("SELECT key, value FROM run").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def set_meta(self, values: Mapping[str, Any]) -> None:
        self._write(lambda c: c.executemany(
            "INSERT INTO run(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(k, _json(v)) for k, v in values.items()]))

    def _write(self, fn) -> Any:
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                out = fn(c)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot write results database {self.path}: {e}",
                             readonly=_is_readonly(e)) from None
        return out

    # -- trials ----------------------------------------------------------------------------
    def completed(self, experiment: str) -> set[TrialKey]:
        rows = self.conn.execute(
            "SELECT condition, n, width, trial FROM trials WHERE experiment=? AND status='complete'",
            (experiment,)).fetchall()
        return {TrialKey(c, int(n), int(w), int(t)) for c, n, w, t in rows}

    def commit_job(self, experiment: str, job_key: str, results: Sequence[TrialResult], *,
                   hardware: Mapping[str, Any] | None = None, version: str = "",
                   hparams: Mapping[str, Any] | None = None) -> int:
        """Insert every trial of one finished job in one transaction; returns the number of
        trials inserted (trials already present are left as they are)."""
        hw = _json(dict(hardware or {}))
        hpj = _json(dict(hparams or {}))
        finished = _now()

        def work(c: sqlite3.Connection) -> int:
            inserted = 0
            for r in results:
                k = r.key
                cur = c.execute(
                    "INSERT INTO trials(experiment, condition, n, width, trial, seed, status, wall_s,"
                    " hardware, version, hparams, extra, job, finished_at)"
                    " VALUES (?,?,?,?,?,?,'complete',?,?,?,?,?,?,?)"
                    " ON CONFLICT(experiment, condition, n, width, trial) DO NOTHING",
                    (experiment, k.condition, int(k.n), int(k.width), int(k.trial), int(r.seed),
                     float(r.wall_s), hw, version, hpj, _json(r.extra or {}), job_key, finished))
                if cur.rowcount == 0:
                    continue
                tid = cur.lastrowid
                c.executemany(
                    "INSERT INTO epochs(trial_id, epoch, train_loss, train_acc, val_loss, val_acc, extra)"
                    " VALUES (?,?,?,?,?,?,?)",
                    [(tid, int(e.epoch), _f(e.train_loss), _f(e.train_acc), _f(e.val_loss),
                      _f(e.val_acc), _extra_json(e.extra)) for e in r.epochs])
                inserted += 1
            return inserted

        return self._write(work)

    # -- frames ----------------------------------------------------------------------------
    def epochs_frame(self):
        """Tidy per-epoch frame: the contract columns plus one column per extra key, sorted by
        (experiment, condition, n, width, trial, epoch)."""
        import pandas as pd

        metric_cols = ["train_loss", "train_acc", "val_loss", "val_acc"]
        trials = pd.DataFrame.from_records(
            self.conn.execute("SELECT id, experiment, condition, n, width, trial FROM trials"
                              " WHERE status = 'complete'").fetchall(),
            columns=["trial_id", "experiment", "condition", "n", "width", "trial"])
        try:  # let SQLite's JSON1 parse the extras (much faster than json.loads per row)
            keys = sorted(r[0] for r in self.conn.execute(
                "SELECT DISTINCT j.key FROM epochs e, json_each(e.extra) j WHERE e.extra IS NOT NULL"))
            if any('"' in k for k in keys):
                raise ValueError("key needs quoting")
            sel = "".join(", json_extract(extra, ?)" for _ in keys)
            cols = ["trial_id", "epoch", *metric_cols, *keys]
            cur = self.conn.execute(f"SELECT {', '.join(cols[:6])}{sel} FROM epochs",
                                    [f'$."{k}"' for k in keys])
            if not keys:  # metrics only (REAL or NULL): float64 blocks, no Python objects kept
                parts = []
                with gc_paused():  # millions of short-lived row tuples
                    while rows := cur.fetchmany(100_000):
                        parts.append(np.array(rows, dtype=np.float64))
                block = np.concatenate(parts) if parts else np.empty((0, len(cols)))
                epochs = pd.DataFrame({c: block[:, i] for i, c in enumerate(cols)})
            else:  # extras may be ints, strings, ...: let pandas infer each column's type
                epochs = pd.DataFrame.from_records(cur.fetchall(), columns=cols)
        except (sqlite3.OperationalError, ValueError):
            rows = self.conn.execute(
                f"SELECT trial_id, epoch, {', '.join(metric_cols)}, extra FROM epochs").fetchall()
            extras = [json.loads(r[6]) if r[6] else {} for r in rows]
            keys = sorted({k for e in extras for k in e})
            epochs = pd.DataFrame.from_records([r[:6] for r in rows], columns=["trial_id", "epoch", *metric_cols])
            for k in keys:
                epochs[k] = [e.get(k) for e in extras]
        # order the (few) trials by key, then the (many) epoch rows by (trial rank, epoch) with
        # integer sorts: a merge plus a sort on six columns, strings included, is 10x slower
        trials = trials.sort_values(["experiment", "condition", "n", "width", "trial"], kind="stable")
        tid = trials["trial_id"].to_numpy(dtype=np.int64)
        by_id = np.argsort(tid, kind="stable")
        eid = epochs["trial_id"].to_numpy(dtype=np.int64)
        at = np.searchsorted(tid[by_id], eid)
        ok = at < len(tid)
        ok[ok] = tid[by_id[at[ok]]] == eid[ok]  # rows of trials that are not complete: dropped
        rank = np.full(len(eid), -1, dtype=np.int64)
        rank[ok] = by_id[at[ok]]
        ep = epochs["epoch"].to_numpy(dtype=np.int64)
        order = np.flatnonzero(ok)[np.lexsort((ep[ok], rank[ok]))]
        df = trials.drop(columns="trial_id").iloc[rank[order]].reset_index(drop=True)
        for col in ("n", "width", "trial"):
            df[col] = df[col].astype("int64")
        df["epoch"] = ep[order]
        for col in metric_cols:
            df[col] = epochs[col].to_numpy(dtype="float64")[order]
        for k in keys:
            col = epochs[k].iloc[order].reset_index(drop=True)
            if col.dtype == object:
                try:
                    col = col.astype("float64")  # None -> NaN
                except (TypeError, ValueError):
                    pass  # non-numeric extra: keep as objects
            df[k] = col
        return df[EPOCH_COLUMNS + keys]

    def trials_frame(self):
        """One row per trial; ``hardware`` and ``extra`` parsed from JSON."""
        import pandas as pd

        rows = self.conn.execute(
            "SELECT experiment, condition, n, width, trial, seed, status, wall_s, hardware, version,"
            " job, finished_at, extra FROM trials ORDER BY experiment, condition, n, width, trial").fetchall()
        df = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
        df["hardware"] = [json.loads(h) if h else {} for h in df["hardware"]]
        df["extra"] = [json.loads(x) if x else {} for x in df["extra"]]
        for col in ("n", "width", "trial"):
            df[col] = df[col].astype("int64")
        df["wall_s"] = df["wall_s"].astype("float64")
        return df


_REFERENCE = _reference_schema()


def open_run_store(run_dir: str | Path, *, readonly: bool = False) -> Store:
    return Store(Path(run_dir) / FILENAME, readonly=readonly)


def epochs_frame(run_dir: str | Path):
    with open_run_store(run_dir, readonly=True) as s:
        return s.epochs_frame()


def trials_frame(run_dir: str | Path):
    with open_run_store(run_dir, readonly=True) as s:
        return s.trials_frame()
