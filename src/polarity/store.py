"""The results store: one SQLite file per run (``DIR/results.sqlite``, WAL mode).

Schema (``PRAGMA user_version`` = ``SCHEMA_VERSION`` = 2)::

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
    epochs   (trial_id INTEGER PRIMARY KEY REFERENCES trials(id),  -- ONE row per trial
              n_epochs INTEGER,    -- how many epoch records the trial has
              epoch BLOB,          -- its series, sorted by epoch (1-based): one array each
              train_loss BLOB, train_acc BLOB, val_loss BLOB, val_acc BLOB,
              extra BLOB)          -- its per-epoch extras, one array per key (NULL: none)

A series BLOB is one numpy array: the byte ``A``, the array's dtype as ``numpy.dtype.str`` (three
characters, little-endian: ``<f8``, ``<f4``, ``|i1``, ``<i2``, ...) and its raw bytes; read it
with ``np.frombuffer(blob, blob[1:4].decode(), offset=4)``.  Series are narrowed without loss
(float64 to float32 when every value is a float32, integers to the smallest type that holds
them) and read back as float64 / int64.  NaN is NaN.  An extras BLOB is the byte ``X``, a 4-byte
little-endian header length, a JSON header and the raw bytes of its numeric series one after
another; the header lists, in key order, ``[key, dtype, nbytes]`` for a numeric series or
``[key, "json", values]`` for the others.  An extra keeps its type: a key whose values are all
integers (booleans count as 0/1) is an int64 column, numbers with gaps are float64 (a missing
value or a NaN is NaN), anything else (text, mixed types; nested values as compact JSON text)
is stored as JSON values and becomes a column of those values.

A finished job's trials are inserted in ONE transaction, one ``trials`` and one ``epochs`` row
per trial, so an interrupted run loses at most the jobs in flight and never holds a partial
trial.  Only the driver process writes; workers encode their trials (``pack_trial``) so the
driver only inserts bytes.

Reading: ``Store.epochs_frame()`` is the tidy export (one row per trial and epoch, columns
``experiment, condition, n, width, trial, epoch, train_loss, train_acc, val_loss, val_acc`` plus
one column per per-epoch extra key), built from whole arrays without a Python object per row;
``Store.trials_frame()`` has one row per trial.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .experiments.base import EpochRecord, ExperimentError, TrialKey, TrialResult, gc_paused

SCHEMA_VERSION = 2
FILENAME = "results.sqlite"
PAGE_SIZE = 16384  # bytes, of a new database
METRICS = ["train_loss", "train_acc", "val_loss", "val_acc"]
EPOCH_COLUMNS = ["experiment", "condition", "n", "width", "trial", "epoch", *METRICS]
TRIAL_COLUMNS = ["experiment", "condition", "n", "width", "trial", "seed", "status", "wall_s",
                 "hardware", "version", "job", "finished_at", "extra"]

_RUN_TRIALS_DDL = """
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
"""
_EPOCHS_DDL = """
CREATE TABLE IF NOT EXISTS {name} (
    trial_id INTEGER PRIMARY KEY REFERENCES trials(id) ON DELETE CASCADE,
    n_epochs INTEGER NOT NULL,
    epoch BLOB NOT NULL,
    train_loss BLOB NOT NULL,
    train_acc BLOB NOT NULL,
    val_loss BLOB NOT NULL,
    val_acc BLOB NOT NULL,
    extra BLOB
);
"""
_DDL = _RUN_TRIALS_DDL + _EPOCHS_DDL.format(name="epochs")
# schema 1: one epochs row per (trial, epoch); read (and upgraded), never written
_DDL_V1 = _RUN_TRIALS_DDL + """
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


def _reference_schema(ddl: str) -> dict[str, list[str]]:
    conn = sqlite3.connect(":memory:")
    conn.executescript(ddl)
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


# ----------------------------------------------------------------------------- series encoding

_INTS = [np.dtype(t) for t in ("i1", "<i2", "<i4", "<i8")]


def _narrow(a: np.ndarray) -> np.ndarray:
    """``a`` in the smallest little-endian dtype that holds every value exactly."""
    if a.dtype.kind == "f":
        a = a.astype("<f8", copy=False)
        with np.errstate(over="ignore"):  # beyond float32's range: not narrowed
            f = a.astype("<f4")
        differ = f != a  # NaN differs from itself
        return f if not differ.any() or np.isnan(a[differ]).all() else a
    a = a.astype("<i8", copy=False)
    if not len(a):
        return a.astype("i1")
    lo, hi = int(a.min()), int(a.max())
    for t in _INTS:
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return a.astype(t)
    return a  # pragma: no cover


def encode_series(a: np.ndarray) -> bytes:
    """One series as a BLOB: ``b"A"``, the narrowed dtype's 3-character ``dtype.str``, raw bytes."""
    a = _narrow(np.asarray(a))
    return b"A" + a.dtype.str.encode() + a.tobytes()


def decode_series(blob: bytes) -> np.ndarray:
    """The array of one series BLOB, widened to float64 / int64."""
    a = np.frombuffer(blob, blob[1:4].decode(), offset=4)
    return a.astype(np.float64 if a.dtype.kind == "f" else np.int64)


def _decode_column(blobs: Sequence[bytes], out: type) -> np.ndarray:
    """The series of many trials, one after the other, as one ``out`` array (one join when they
    share a dtype, as a run's trials do)."""
    if not blobs:
        return np.empty(0, out)
    head = blobs[0][:4]
    if all(b.startswith(head) for b in blobs):
        raw = b"".join(memoryview(b)[4:] for b in blobs)
        return np.frombuffer(raw, head[1:].decode()).astype(out)
    return np.concatenate([np.frombuffer(b, b[1:4].decode(), offset=4) for b in blobs]).astype(out)


def _scalar(v: Any) -> Any:
    """An extra's value as the tidy frame holds it: numpy/torch scalars as Python scalars,
    booleans as 0/1, NaN and missing as None, nested values as compact JSON text."""
    if v is None or type(v) in (int, str):
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return None if v != v else float(v)
    if isinstance(v, (int, str)):
        return (int if isinstance(v, int) else str)(v)
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # numpy / torch scalars
        return _scalar(v.item())
    return json.dumps(v, sort_keys=True, separators=(",", ":"), default=_json_default)


def _extra_entry(key: str, values: list) -> tuple[list, bytes]:
    """One extra's per-epoch values (None where an epoch lacks it) as a header entry and bytes:
    an int64 series when every value is an integer, a float64 series when every value is a
    number or missing, else JSON values (see the module docstring)."""
    kinds = set(map(type, values))
    if kinds <= {float}:
        a = np.array(values, dtype=np.float64)
    else:
        values = [_scalar(v) for v in values]
        kinds = set(map(type, values))
        a = None
        if kinds <= {int}:
            try:
                a = np.array(values, dtype=np.int64)
            except OverflowError:
                kinds = {float}
        if a is None and kinds <= {int, float, type(None)}:
            a = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
        if a is None:
            return [key, "json", values], b""
    a = _narrow(a)
    body = a.tobytes()
    return [key, a.dtype.str, len(body)], body


def encode_extras(keys: Iterable[str], records: Sequence[Mapping[str, Any] | None]) -> bytes | None:
    """The per-epoch extras of one trial as one BLOB (None when it has none)."""
    keys = sorted(keys)
    if not keys:
        return None
    header, bodies = [], []
    for k in keys:
        entry, body = _extra_entry(str(k), [r.get(k) if r else None for r in records])
        header.append(entry)
        bodies.append(body)
    h = json.dumps(header, separators=(",", ":"), default=_json_default).encode()
    return b"X" + len(h).to_bytes(4, "little") + h + b"".join(bodies)


def decode_extras(blob: bytes | None) -> dict[str, Any]:
    """key -> float64/int64 array or list of JSON values, for one trial's extras BLOB."""
    if not blob:
        return {}
    hl = int.from_bytes(blob[1:5], "little")
    out, at = {}, 5 + hl
    for key, kind, arg in json.loads(blob[5:at]):
        if kind == "json":
            out[key] = arg
        else:
            a = np.frombuffer(blob, kind, count=arg // np.dtype(kind).itemsize, offset=at)
            out[key] = a.astype(np.float64 if a.dtype.kind == "f" else np.int64)
            at += arg
    return out


@dataclass
class PackedTrial:
    """One trial encoded for the store (``pack_trial``): what a worker hands the driver, so that
    the driver's commit only inserts bytes."""

    key: TrialKey
    seed: int
    wall_s: float
    n_epochs: int
    series: tuple[bytes, bytes, bytes, bytes, bytes]  # epoch, train_loss, train_acc, val_loss, val_acc
    extra: bytes | None  # the per-epoch extras
    trial_extra: str  # JSON: trial-level data


def pack_trial(r: TrialResult | PackedTrial) -> PackedTrial:
    """Encode one trial's per-epoch records (sorted by epoch; an epoch recorded twice is an
    error).  Raises ``TypeError`` for an extra that is not JSON serialisable."""
    if isinstance(r, PackedTrial):
        return r
    eps = r.epochs
    n = len(eps)
    epoch = np.fromiter((e.epoch for e in eps), dtype=np.int64, count=n)
    m = np.array([(e.train_loss, e.train_acc, e.val_loss, e.val_acc) for e in eps],
                 dtype=np.float64).reshape(n, 4)
    records = [e.extra for e in eps]
    if n > 1 and not (np.diff(epoch) > 0).all():
        order = np.argsort(epoch, kind="stable")
        epoch, m = epoch[order], m[order]
        records = [records[i] for i in order]
        dup = epoch[1:][np.diff(epoch) == 0]
        if len(dup):
            raise ExperimentError(f"trial {r.key}: epoch {int(dup[0])} is recorded twice")
    keys: set[str] = set()
    for x in records:
        if x:
            keys.update(x)
    series = (encode_series(epoch), *(encode_series(m[:, i]) for i in range(4)))
    return PackedTrial(r.key, int(r.seed), float(r.wall_s), n, series, encode_extras(keys, records),
                       _json(r.extra or {}))


# ----------------------------------------------------------------------------- the tidy frame

def _extra_columns(blobs: Sequence[bytes | None], counts: np.ndarray) -> dict[str, Any]:
    """The extras of many trials (in frame order) as frame columns, key -> column.  Trials whose
    extras share a header (the same keys, types and lengths: usually all of a run's) are decoded
    as one block."""
    import pandas as pd

    total = int(counts.sum())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    groups: dict[tuple[bytes, int], list[int]] = {}
    for t, b in enumerate(blobs):
        if b:
            hl = int.from_bytes(b[1:5], "little")
            groups.setdefault((b[5:5 + hl], int(counts[t])), []).append(t)
    chunks: dict[str, list[tuple[np.ndarray, Any]]] = {}
    for (header, n), members in groups.items():
        ts = np.asarray(members, dtype=np.int64)
        pos = (starts[ts][:, None] + np.arange(n, dtype=np.int64)[None, :]).ravel()
        entries = json.loads(header)
        skip = 5 + len(header)
        width = sum(e[2] for e in entries if e[1] != "json")
        block = np.frombuffer(b"".join(memoryview(blobs[t])[skip:] for t in members),
                              np.uint8).reshape(len(members), width)
        at = 0
        for key, kind, arg in entries:
            if kind == "json":
                chunks.setdefault(key, []).append((pos, arg * len(members)))
                continue
            a = np.ascontiguousarray(block[:, at:at + arg]).view(kind).ravel()
            chunks.setdefault(key, []).append((pos, a))
            at += arg
    cols: dict[str, Any] = {}
    for key in sorted(chunks):
        parts = chunks[key]
        numeric = [a for _, a in parts if isinstance(a, np.ndarray)]
        if len(numeric) == len(parts):
            if all(a.dtype.kind == "i" for a in numeric) and sum(len(p) for p, _ in parts) == total:
                col = np.empty(total, np.int64)
            else:
                col = np.full(total, np.nan)
            for p, a in parts:
                col[p] = a
            cols[key] = col
            continue
        # text or mixed types: the values as objects, typed as pandas types them (as schema 1)
        obj = np.full(total, None, dtype=object)
        for p, a in parts:
            if isinstance(a, np.ndarray):
                v = a.astype(object)
                if a.dtype.kind == "f":
                    v[np.isnan(a)] = None
                obj[p] = v
            else:
                obj[p] = np.fromiter(a, dtype=object, count=len(a))
        col = pd.Series(obj.tolist())
        if col.dtype == object:
            try:
                col = col.astype("float64")  # None -> NaN
            except (TypeError, ValueError):
                pass  # non-numeric extra: keep as objects
        cols[key] = col
    return cols


def _frame_v2(conn: sqlite3.Connection):
    import pandas as pd

    rows = conn.execute(
        "SELECT t.experiment, t.condition, t.n, t.width, t.trial, e.n_epochs, e.epoch, e.train_loss,"
        " e.train_acc, e.val_loss, e.val_acc, e.extra FROM trials t JOIN epochs e ON e.trial_id = t.id"
        " WHERE t.status = 'complete' ORDER BY t.experiment, t.condition, t.n, t.width, t.trial").fetchall()
    cols = list(zip(*rows)) if rows else [()] * 12
    trials = pd.DataFrame.from_records([r[:5] for r in rows], columns=EPOCH_COLUMNS[:5])
    counts = np.asarray(cols[5], dtype=np.int64)
    df = trials.iloc[np.repeat(np.arange(len(rows)), counts)].reset_index(drop=True)
    for col in ("n", "width", "trial"):
        df[col] = df[col].astype("int64")
    df["epoch"] = _decode_column(cols[6], np.int64)
    for i, m in enumerate(METRICS):
        df[m] = _decode_column(cols[7 + i], np.float64)
    extras = _extra_columns(cols[11], counts)
    for k, v in extras.items():
        df[k] = v
    return df[EPOCH_COLUMNS + list(extras)]


def _frame_v1(conn: sqlite3.Connection):
    """The tidy frame of a schema-1 store (one epochs row per trial and epoch)."""
    import pandas as pd

    trials = pd.DataFrame.from_records(
        conn.execute("SELECT id, experiment, condition, n, width, trial FROM trials"
                     " WHERE status = 'complete'").fetchall(),
        columns=["trial_id", "experiment", "condition", "n", "width", "trial"])
    try:  # let SQLite's JSON1 parse the extras (much faster than json.loads per row)
        keys = sorted(r[0] for r in conn.execute(
            "SELECT DISTINCT j.key FROM epochs e, json_each(e.extra) j WHERE e.extra IS NOT NULL"))
        if any('"' in k for k in keys):
            raise ValueError("key needs quoting")
        sel = "".join(", json_extract(extra, ?)" for _ in keys)
        cols = ["trial_id", "epoch", *METRICS, *keys]
        cur = conn.execute(f"SELECT {', '.join(cols[:6])}{sel} FROM epochs", [f'$."{k}"' for k in keys])
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
        rows = conn.execute(f"SELECT trial_id, epoch, {', '.join(METRICS)}, extra FROM epochs").fetchall()
        extras = [json.loads(r[6]) if r[6] else {} for r in rows]
        keys = sorted({k for e in extras for k in e})
        epochs = pd.DataFrame.from_records([r[:6] for r in rows], columns=["trial_id", "epoch", *METRICS])
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
    for col in METRICS:
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


_REFERENCE = {1: _reference_schema(_DDL_V1), SCHEMA_VERSION: _reference_schema(_DDL)}


def upgrade(path: str | Path) -> dict[str, Any]:
    """Convert a schema-1 store to the current schema in place: in ONE transaction (an
    interruption leaves the schema-1 store as it was), then VACUUM to return the space.  The
    caller makes sure nobody writes meanwhile (``polarity store upgrade`` holds the run's lock).
    Returns what it did: ``from``, ``to``, ``trials``, ``bytes_before``, ``bytes_after``."""
    path = Path(path)
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
