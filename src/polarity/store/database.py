"""The results database (``DIR/results.sqlite``): ``Store`` opens it (refusing a newer or a
foreign one untouched, reading a read-only WAL database whole), commits a finished job's trials
in one transaction, checks every trial (``integrity``) and builds the frames (``frames``).  The
package's docstring (``polarity.store``) describes the whole; ``maintenance`` upgrades and
repairs a store on top of this module."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sqlite3
import struct
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..experiments.base import ExperimentError, TrialKey, TrialResult
from .columnar import PackedTrial, _json, pack_trial
from .frames import _frame_v1, _frame_v2, old_problems
from .integrity import COUNT_KEY, TRIAL_FIELDS, Grid, check, trial_digest
from .schema import _DDL, _REFERENCE, FILENAME, PAGE_SIZE, SCHEMA_VERSION, TRIAL_COLUMNS, _tables


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


@contextmanager
def immediate(conn: sqlite3.Connection):
    """One write transaction on ``conn`` (opened with ``isolation_level=None``): ``BEGIN
    IMMEDIATE``, ``COMMIT`` when the block ends, ``ROLLBACK`` when it (or the commit) raises,
    unless SQLite already rolled back itself (a full disk does)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _refuse_links(path: Path) -> None:
    """A writer never opens a database (or its WAL, index or journal) through a symbolic link:
    SQLite would write the file it points to, e.g. another run's results."""
    for p in (path, *(Path(f"{path}{x}") for x in ("-wal", "-shm", "-journal"))):
        if p.is_symlink():
            raise StoreError(f"{p} is a symbolic link (to {os.readlink(p)}); polarity never writes a results "
                             "database through a link (it would change the file it points to). Nothing was "
                             "changed; replace the link by a copy of the file, or choose another run directory")


def old_repair_advice(path: Path) -> str:
    """What to do with the damaged trials of a schema-1 or -2 store at ``path``."""
    d = path.parent
    return (f"`polarity store repair {d}` removes the damaged trials (it lists them), then `polarity store upgrade "
            f"{d}` converts the store, and rerunning the run's command recomputes them")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _wal(conn: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """Switch to WAL.  SQLite answers "database is locked" at once, without waiting, when another
    process holds the file during the switch (two runs started together), so wait here."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Store:
    """One run's SQLite database.  ``readonly=True`` never writes (export / report); a schema-1
    store opens read-only only (``upgrade`` converts it)."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._tmp: tempfile.TemporaryDirectory | None = None  # a read-only WAL database's copy
        self.grid: Grid | None = None  # the run's spec, when known (``expect``)
        self._checked = False
        if readonly and not self.path.exists():
            raise StoreError(f"no results database at {self.path}")
        if not readonly:
            _refuse_links(self.path)
        try:
            self.conn = self._connect()
            try:
                self._check_schema(self._check_version())
                if not readonly:
                    self.check_current()
                    self._init_schema()
            except BaseException:
                self.close()
                raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot open results database {self.path}: {e}",
                             readonly=not readonly and _is_readonly(e)) from None
        except StoreError:  # a ValueError too (ExperimentError): already says what is wrong
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:  # a damaged schema
            raise StoreError(f"cannot open results database {self.path}: it is damaged ({type(e).__name__}: "
                             f"{str(e)[:200]}); nothing was changed") from None

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

    def _check_version(self) -> dict:
        """Record the schema version and return the tables (for ``_check_schema``)."""
        # the version and the tables are read in one snapshot: a process creating the schema
        # concurrently commits both at once, and a reader must not see one without the other
        self.conn.execute("BEGIN")
        try:
            (v,) = self.conn.execute("PRAGMA user_version").fetchone()
            tables = _tables(self.conn)
        finally:
            self.conn.execute("COMMIT")
        if v > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {v}, newer than this polarity's "
                f"{SCHEMA_VERSION}; upgrade polarity to read or extend it (nothing was changed)")
        self.version = v
        return tables

    def _check_schema(self, tables: dict) -> None:
        """Refuse (untouched) a database that is not polarity's, whatever its user_version; a new,
        empty database is fine (a reader sees an empty run)."""
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
        _wal(c)
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        if self.version == 0:
            with immediate(c):
                # unless another process created the schema since we looked
                if c.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    for stmt in _DDL.strip().split(";"):
                        if stmt.strip():
                            c.execute(stmt)
                    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
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
        """The run's metadata (``trial_count`` is the store's own, checked by ``verify``)."""
        with self._reading():
            rows = self.conn.execute("SELECT key, value FROM run WHERE key != ?", (COUNT_KEY,)).fetchall()
        out = {}
        for k, v in rows:
            try:
                out[k] = json.loads(v)
            except (TypeError, ValueError) as e:
                raise StoreError(f"{self.path}: its run metadata {k!r} is not JSON ({e}); the database is "
                                 "damaged or was edited. Nothing was written; restore it from a copy") from None
        return out

    def set_meta(self, values: Mapping[str, Any]) -> None:
        self._write(lambda c: c.executemany(
            "INSERT INTO run(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(k, _json(v)) for k, v in values.items()]))

    def _write(self, fn) -> Any:
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        c = self.conn
        try:
            with immediate(c):
                out = fn(c)
        except sqlite3.Error as e:
            raise StoreError(f"cannot write results database {self.path}: {e}",
                             readonly=_is_readonly(e)) from None
        return out

    # -- integrity -------------------------------------------------------------------------
    def expect(self, grid: Grid | None) -> None:
        """The run's spec (its experiment and grid): a row outside it is refused on read."""
        self.grid = grid
        self._checked = False

    def verify(self) -> None:
        """Check every trial of a schema-3 store (``integrity.check``) once; raise a one-line
        ``StoreError`` naming the first damaged trial and saying what to do.  A reader keeps the
        snapshot it checked until it is closed, so its frames hold exactly the trials checked.
        Schemas 1 and 2 have no digests: their rows are checked to read as polarity wrote them
        (``frames.old_problems``)."""
        if self._checked or self.version == 0:
            return
        if self.version < 3:
            with self._reading():
                bad = old_problems(self.conn, self.version, limit=1)
            if bad:
                raise StoreError(f"{self.path}: {bad[0][1]}. Nothing was written; {old_repair_advice(self.path)}")
            self._checked = True
            return
        c = self.conn
        with self._reading():
            if not c.in_transaction:
                c.execute("BEGIN")
            try:
                problems = check(c, self.grid)
            finally:
                if not self.readonly and c.in_transaction:
                    c.execute("COMMIT")
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise StoreError(
                f"{self.path}: {problems[0]}{more}; nothing was read or written. `polarity store repair "
                f"{self.path.parent}` removes the damaged trials (it lists them), then rerunning the run's "
                "command recomputes them")
        self._checked = True

    @contextmanager
    def _reading(self):
        """SQLite's and the decoders' errors on a damaged file as one-line ``StoreError``s."""
        try:
            yield
        except StoreError:
            raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {self.path}: {e}; the file is damaged. Nothing was written; "
                             "restore it from a copy, or move it away and rerun the run's command to "
                             "recompute its trials") from None
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error) as e:
            raise StoreError(f"cannot read {self.path}: its content is damaged ({type(e).__name__}: "
                             f"{str(e)[:200]}). Nothing was written") from None

    # -- trials ----------------------------------------------------------------------------
    def completed(self, experiment: str) -> set[TrialKey]:
        self.verify()
        with self._reading():
            rows = self.conn.execute(
                "SELECT condition, n, width, trial FROM trials NOT INDEXED WHERE experiment=? AND status='complete'",
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
                trial = (experiment, k.condition, int(k.n), int(k.width), int(k.trial), p.seed, "complete",
                         p.wall_s, hw, version, hpj, p.trial_extra, job_key, finished)
                epochs = (p.n_epochs, *p.series, p.extra)
                cur = c.execute(
                    f"INSERT INTO trials({', '.join(TRIAL_FIELDS)}, digest) VALUES ({', '.join('?' * 15)})"
                    " ON CONFLICT(experiment, condition, n, width, trial) DO NOTHING",
                    (*trial, trial_digest(trial, epochs)))
                if cur.rowcount == 0:
                    continue
                c.execute("INSERT INTO epochs(trial_id, n_epochs, epoch, train_loss, train_acc, val_loss,"
                          " val_acc, extra) VALUES (?,?,?,?,?,?,?,?)", (cur.lastrowid, *epochs))
                inserted += 1
            if inserted:  # in the same transaction: a trial row that later vanishes is noticed
                c.execute("INSERT INTO run(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET"
                          " value = CAST(CAST(value AS INTEGER) + ? AS TEXT)", (COUNT_KEY, str(inserted), inserted))
            return inserted

        return self._write(work)

    # -- frames ----------------------------------------------------------------------------
    def epochs_frame(self):
        """Tidy per-epoch frame: the contract columns plus one column per extra key, sorted by
        (experiment, condition, n, width, trial, epoch).  Schemas 2 and 3 build it from whole
        arrays (no Python object per row); a schema-1 store gives the same frame.  The trials are
        checked first (``verify``)."""
        self.verify()
        with self._reading():
            return _frame_v1(self.conn) if self.version == 1 else _frame_v2(self.conn)

    def trials_frame(self):
        """One row per trial; ``hardware`` and ``extra`` parsed from JSON."""
        import pandas as pd

        self.verify()
        with self._reading():
            rows = self.conn.execute(
                "SELECT experiment, condition, n, width, trial, seed, status, wall_s, hardware, version,"
                " job, finished_at, extra FROM trials NOT INDEXED"
                " ORDER BY experiment, condition, n, width, trial").fetchall()
            df = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
            df["hardware"] = [json.loads(h) if h else {} for h in df["hardware"]]
            df["extra"] = [json.loads(x) if x else {} for x in df["extra"]]
            for col in ("n", "width", "trial"):
                df[col] = df[col].astype("int64")
            df["wall_s"] = df["wall_s"].astype("float64")
            return df


def open_run_store(run_dir: str | Path, *, readonly: bool = False) -> Store:
    return Store(Path(run_dir) / FILENAME, readonly=readonly)


def epochs_frame(run_dir: str | Path):
    with open_run_store(run_dir, readonly=True) as s:
        return s.epochs_frame()


def trials_frame(run_dir: str | Path):
    with open_run_store(run_dir, readonly=True) as s:
        return s.trials_frame()
