"""The results store: one SQLite file per run (``DIR/results.sqlite``, WAL mode).  Its schema is
in ``schema``, the encoding of a trial's series and extras in ``columnar``, the tidy frames in
``frames``; here the database is opened, written and upgraded.  See ``docs/engine.md``.

A finished job's trials are inserted in ONE transaction, one ``trials`` and one ``epochs`` row
per trial, so an interrupted run loses at most the jobs in flight and never holds a partial
trial.  Only the driver process writes; workers encode their trials (``pack_trial``) so the
driver only inserts bytes.

Reading: ``Store.epochs_frame()`` is the tidy export (``frames``); ``Store.trials_frame()`` has
one row per trial.

Schema 1 (polarity 0.1 before issue 14) stored one ``epochs`` row per (trial, epoch) with REAL
metrics (NULL for NaN) and the extras as a JSON object.  Such a store is read and exported as it
is (the same frame), never written: ``polarity store upgrade DIR`` (``upgrade``) converts it in
place, in one transaction, when the user asks.

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
import itertools
import json
import math
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..experiments.base import EpochRecord, ExperimentError, TrialKey, TrialResult, gc_paused
from .columnar import (PackedTrial, _json, decode_extras, decode_series, encode_extras, encode_series,
                       pack_trial)
from .frames import _frame_v1, _frame_v2
from .schema import (_DDL, _DDL_V1, _EPOCHS_DDL, _REFERENCE, EPOCH_COLUMNS, FILENAME, METRICS, PAGE_SIZE,
                     SCHEMA_VERSION, TRIAL_COLUMNS, _tables)

__all__ = ["SCHEMA_VERSION", "FILENAME", "PAGE_SIZE", "METRICS", "EPOCH_COLUMNS", "TRIAL_COLUMNS",
           "StoreError", "Store", "PackedTrial", "pack_trial", "encode_series", "decode_series",
           "encode_extras", "decode_extras", "upgrade", "open_run_store", "epochs_frame", "trials_frame"]


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


def _refuse_links(path: Path) -> None:
    """A writer never opens a database (or its WAL, index or journal) through a symbolic link:
    SQLite would write the file it points to, e.g. another run's results."""
    for p in (path, *(Path(f"{path}{x}") for x in ("-wal", "-shm", "-journal"))):
        if p.is_symlink():
            raise StoreError(f"{p} is a symbolic link (to {os.readlink(p)}); polarity never writes a results "
                             "database through a link (it would change the file it points to). Nothing was "
                             "changed; replace the link by a copy of the file, or choose another run directory")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _v1_trials(conn: sqlite3.Connection) -> Iterable[tuple[int, list[EpochRecord]]]:
    """A schema-1 store's epoch rows as (trial id, records), NULL metrics as NaN."""
    rows = conn.execute(f"SELECT trial_id, epoch, {', '.join(METRICS)}, extra FROM epochs"
                        " ORDER BY trial_id, epoch")
    nan = math.nan
    for tid, group in itertools.groupby(rows, key=lambda r: r[0]):
        yield tid, [EpochRecord(e, nan if a is None else a, nan if b is None else b,
                                nan if c is None else c, nan if d is None else d,
                                json.loads(x) if x else {}) for _, e, a, b, c, d, x in group]


class Store:
    """One run's SQLite database.  ``readonly=True`` never writes (export / report); a schema-1
    store opens read-only only (``upgrade`` converts it)."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._tmp: tempfile.TemporaryDirectory | None = None  # a read-only WAL database's copy
        if readonly and not self.path.exists():
            raise StoreError(f"no results database at {self.path}")
        if not readonly:
            _refuse_links(self.path)
        try:
            self.conn = self._connect()
            try:
                self._check_version()
                self._check_schema()
                if not readonly:
                    self.check_current()
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
                self.version = SCHEMA_VERSION
            return
        want = _REFERENCE.get(self.version, {})
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

    def check_current(self) -> None:
        """Raise ``StoreError`` for a store of an older schema: a writer needs the current one,
        and an older store is upgraded only when the user asks."""
        if 0 < self.version < SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written with results schema {self.version} (an older polarity); it "
                f"is read and exported as it is, but new results need schema {SCHEMA_VERSION}: run "
                f"`polarity store upgrade {self.path.parent}` to convert it in place, then rerun "
                "(nothing was changed)")

    def _init_schema(self) -> None:
        c = self.conn
        if self.version == 0:  # before the file's first page: a trial's row (a few kB) per page,
            c.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # not one per 4 kB page and a third lost
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

    def commit_job(self, experiment: str, job_key: str, results: Sequence[TrialResult | PackedTrial], *,
                   hardware: Mapping[str, Any] | None = None, version: str = "",
                   hparams: Mapping[str, Any] | None = None) -> int:
        """Insert every trial of one finished job in one transaction, one ``trials`` and one
        ``epochs`` row each; returns the number of trials inserted (trials already present are
        left as they are).  ``results`` may be packed already (``pack_trial``, by the worker)."""
        packed = [pack_trial(r) for r in results]  # before the transaction: a bad extra writes nothing
        hw = _json(dict(hardware or {}))
        hpj = _json(dict(hparams or {}))
        finished = _now()

        def work(c: sqlite3.Connection) -> int:
            inserted = 0
            for p in packed:
                k = p.key
                cur = c.execute(
                    "INSERT INTO trials(experiment, condition, n, width, trial, seed, status, wall_s,"
                    " hardware, version, hparams, extra, job, finished_at)"
                    " VALUES (?,?,?,?,?,?,'complete',?,?,?,?,?,?,?)"
                    " ON CONFLICT(experiment, condition, n, width, trial) DO NOTHING",
                    (experiment, k.condition, int(k.n), int(k.width), int(k.trial), p.seed,
                     p.wall_s, hw, version, hpj, p.trial_extra, job_key, finished))
                if cur.rowcount == 0:
                    continue
                c.execute("INSERT INTO epochs(trial_id, n_epochs, epoch, train_loss, train_acc, val_loss,"
                          " val_acc, extra) VALUES (?,?,?,?,?,?,?,?)",
                          (cur.lastrowid, p.n_epochs, *p.series, p.extra))
                inserted += 1
            return inserted

        return self._write(work)

    # -- frames ----------------------------------------------------------------------------
    def epochs_frame(self):
        """Tidy per-epoch frame: the contract columns plus one column per extra key, sorted by
        (experiment, condition, n, width, trial, epoch).  Schema 2 builds it from whole arrays
        (no Python object per row); a schema-1 store gives the same frame."""
        if self.version == 1:
            return _frame_v1(self.conn)
        return _frame_v2(self.conn)

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


def upgrade(path: str | Path) -> dict[str, Any]:
    """Convert a schema-1 store to the current schema in place: in ONE transaction (an
    interruption leaves the schema-1 store as it was), then VACUUM to return the space.  The
    caller makes sure nobody writes meanwhile (``polarity store upgrade`` holds the run's lock).
    Returns what it did: ``from``, ``to``, ``trials``, ``bytes_before``, ``bytes_after``."""
    path = Path(path)
    _refuse_links(path)
    with Store(path, readonly=True) as s:  # refuses a newer or foreign database untouched
        version = s.version
    size = path.stat().st_size
    out = {"from": version, "to": SCHEMA_VERSION, "trials": 0, "bytes_before": size, "bytes_after": size}
    if version in (0, SCHEMA_VERSION):
        return out
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != version:  # pragma: no cover
                raise StoreError(f"{path} changed while it was being upgraded; nothing was changed")
            conn.execute(_EPOCHS_DDL.format(name="epochs_v2"))
            with gc_paused():
                for tid, records in _v1_trials(conn):
                    p = pack_trial(TrialResult(TrialKey("", 0, 0, 0), 0, 0.0, records))
                    conn.execute("INSERT INTO epochs_v2 VALUES (?,?,?,?,?,?,?,?)",
                                 (tid, p.n_epochs, *p.series, p.extra))
                    out["trials"] += 1
            conn.execute("DROP TABLE epochs")
            conn.execute("ALTER TABLE epochs_v2 RENAME TO epochs")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as e:
        raise StoreError(f"cannot upgrade {path}: {e} (the store is left as it was)",
                         readonly=_is_readonly(e)) from None
    finally:
        conn.close()
    out["bytes_after"] = path.stat().st_size
    return out


def open_run_store(run_dir: str | Path, *, readonly: bool = False) -> Store:
    return Store(Path(run_dir) / FILENAME, readonly=readonly)


def epochs_frame(run_dir: str | Path):
    with open_run_store(run_dir, readonly=True) as s:
        return s.epochs_frame()


def trials_frame(run_dir: str | Path):
    with open_run_store(run_dir, readonly=True) as s:
        return s.trials_frame()
