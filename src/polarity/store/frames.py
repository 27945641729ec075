"""The tidy frame of a store's epochs: one row per trial and epoch, columns
``experiment, condition, n, width, trial, epoch, train_loss, train_acc, val_loss, val_acc`` plus
one column per per-epoch extra key.  Schema 2's is built from whole arrays without a Python
object per row; a schema-1 store gives the same frame.  See ``docs/engine.md``.

A schema-1 or -2 store has no digests: ``old_problems`` finds its trials whose rows cannot be
read as polarity wrote them (export refuses them, ``store upgrade`` will not seal them,
``store repair`` removes them).
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Sequence

import numpy as np

from ..experiments.base import gc_paused
from .columnar import _decode_column
from .integrity import Text, label
from .schema import EPOCH_COLUMNS, METRICS


def _float_if_numeric(col):
    """An extra's object column as float64 when every value is a number or None (None -> NaN),
    as pandas types it; any other column as it is."""
    if col.dtype == object:
        try:
            col = col.astype("float64")  # None -> NaN
        except (TypeError, ValueError):
            pass  # non-numeric extra: keep as objects
    return col


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
        cols[key] = _float_if_numeric(pd.Series(obj.tolist()))
    return cols


def _frame_v2(conn: sqlite3.Connection):
    import pandas as pd

    rows = conn.execute(
        "SELECT t.experiment, t.condition, t.n, t.width, t.trial, e.n_epochs, e.epoch, e.train_loss,"
        " e.train_acc, e.val_loss, e.val_acc, e.extra FROM trials t NOT INDEXED JOIN epochs e ON e.trial_id = t.id"
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


def _old_trial_problems(conn: sqlite3.Connection, limit: int | None = None) -> list[tuple[int, str]]:
    """Trials rows of a schema-1 or -2 store that cannot be read as polarity wrote them: a key (n,
    width, trial) that is not an integer, a wall time that is not a number, hardware or extra
    that is not a JSON object.  (trials row id, text) for each, at most ``limit``."""
    ints = [f"typeof({c}) != 'integer'" for c in ("n", "width", "trial")]
    objs = [f"({c} IS NOT NULL AND {c} != '' AND CASE WHEN json_valid({c}) THEN json_type({c}) != 'object' ELSE 1 END)"
            for c in ("hardware", "extra")]
    wall = "typeof(wall_s) NOT IN ('real', 'integer', 'null')"
    cols = ("n", "width", "trial", "hardware", "extra", "wall_s")
    which = " ".join(f"WHEN {c} THEN '{name}'" for c, name in zip((*ints, *objs, wall), cols))
    rows = conn.execute(f"SELECT id, condition, n, width, trial, CASE {which} END FROM trials NOT INDEXED"
                        f" WHERE {' OR '.join((*ints, *objs, wall))} ORDER BY id LIMIT ?",
                        (-1 if limit is None else limit,)).fetchall()
    out = []
    for rid, cond, n, w, t, col in rows:
        (value,) = conn.execute(f"SELECT {col} FROM trials WHERE id = ?", (rid,)).fetchone()
        want = "an integer" if col in ("n", "width", "trial") else "a number" if col == "wall_s" else "a JSON object"
        out.append((rid, f"trial {cond!r} n={n!r} width={w!r} trial={t!r} (row {rid}): its {col} is "
                         f"{repr(value)[:60]}, not {want}; the trials row is damaged"))
    return out


def _v1_problems(conn: sqlite3.Connection, limit: int | None = None) -> list[tuple[int, str]]:
    """Schema-1 epoch rows (of a trial) that cannot be read as polarity wrote them: a metric that
    is not a number (or NULL), an epoch that is not an integer, an extra that is not a JSON
    object.  (trials row id, text) for each such trial's first, at most ``limit``."""
    checks = [f"typeof(e.{m}) NOT IN ('real', 'integer', 'null')" for m in METRICS]
    names = " ".join(f"WHEN {c} THEN '{m}'" for c, m in zip(checks, METRICS))
    bad_extra = ("(e.extra IS NOT NULL AND CASE WHEN json_valid(e.extra) THEN json_type(e.extra) != 'object'"
                 " ELSE 1 END)")
    rows = conn.execute(
        f"SELECT t.condition, t.n, t.width, t.trial, t.id, e.epoch, CASE {names} WHEN typeof(e.epoch) != 'integer'"
        f" THEN 'epoch' ELSE 'extra' END FROM epochs e JOIN trials t ON t.id = e.trial_id"
        f" WHERE {' OR '.join(checks)} OR typeof(e.epoch) != 'integer' OR {bad_extra} ORDER BY t.id").fetchall()
    out: dict[int, str] = {}
    for cond, n, w, t, rid, epoch, col in rows:
        if rid in out:
            continue
        if len(out) == limit:
            break
        value = conn.execute(f"SELECT {col} FROM epochs WHERE trial_id = ? AND epoch IS ?", (rid, epoch)).fetchone()
        shown = repr(value[0])[:60] if value else "?"
        want = "a JSON object" if col == "extra" else "an integer" if col == "epoch" else "a number"
        out[rid] = (f"trial {cond!r} n={n} width={w} trial={t} (row {rid}), epoch {epoch!r}: its {col} is {shown}, "
                    f"not {want}; the schema-1 row is damaged")
    return list(out.items())


def _shown(v: Any) -> str:
    """A value that should not be where it is, in a few words."""
    if isinstance(v, Text):
        return f"a TEXT value of {len(v)} bytes"
    if isinstance(v, (bytes, bytearray)):
        return f"a BLOB of {len(v)} bytes"
    return repr(v)[:60]


def _series_problem(name: str, blob: Any, n: int) -> str | None:
    """Why one series BLOB (``columnar.encode_series``) is not ``n`` numbers; None when it is."""
    if isinstance(blob, Text) or not isinstance(blob, bytes):
        return f"its {name} is {_shown(blob)}, not a series"
    try:
        if blob[:1] != b"A":
            raise ValueError("no series header")
        dt = np.dtype(blob[1:4].decode("ascii"))
        if dt.kind not in "iuf":
            raise ValueError(f"dtype {dt.str}")
        count, rest = divmod(len(blob) - 4, dt.itemsize)
        if rest:
            raise ValueError(f"{len(blob) - 4} bytes of {dt.str}")
    except (ValueError, TypeError) as e:  # a UnicodeDecodeError is a ValueError
        return f"its {name} series cannot be decoded ({str(e)[:80]})"
    return None if count == n else f"its {name} series holds {count} values for {n} epochs"


def _extras_problem(blob: Any, n: int) -> str | None:
    """Why one extras BLOB (``columnar.encode_extras``) is not ``n`` epochs' extras; None when it is."""
    if blob is None:
        return None
    if isinstance(blob, Text) or not isinstance(blob, bytes):
        return f"its extra is {_shown(blob)}, not the extras"
    try:
        if blob[:1] != b"X":
            raise ValueError("no extras header")
        at = 5 + int.from_bytes(blob[1:5], "little")
        for key, kind, arg in json.loads(blob[5:at]):
            if kind == "json":
                if not isinstance(arg, list) or len(arg) != n:
                    raise ValueError(f"extra {str(key)[:40]!r} is not {n} values")
                continue
            dt = np.dtype(kind)
            if dt.kind not in "iuf" or arg % dt.itemsize or arg // dt.itemsize != n:
                raise ValueError(f"extra {str(key)[:40]!r} is {arg} bytes of {dt.str}, not {n} numbers")
            at += arg
        if at != len(blob):
            raise ValueError(f"{len(blob)} bytes, not the {at} its header lists")
    except (ValueError, TypeError) as e:  # JSON's errors are ValueErrors
        return f"its extra cannot be decoded ({str(e)[:80]})"
    return None


def _v2_problems(conn: sqlite3.Connection, limit: int | None = None) -> list[tuple[int, str]]:
    """Schema-2 epochs rows (of a trial) that cannot be decoded as polarity wrote them: a series
    that is not a series BLOB of ``n_epochs`` numbers, extras whose header or size does not fit.
    (trials row id, text) for each, at most ``limit``.  A changed number that still decodes
    cannot be seen: schema 2 has no digests."""
    saved = conn.text_factory
    conn.text_factory = Text  # a TEXT value, UTF-8 or not, read as its bytes and told from a BLOB
    try:
        out = []
        for rid, *key, n, e1, e2, e3, e4, e5, extra in conn.execute(
                f"SELECT t.id, t.condition, t.n, t.width, t.trial, e.n_epochs, e.epoch, "
                f"{', '.join('e.' + m for m in METRICS)}, e.extra"
                " FROM trials t NOT INDEXED JOIN epochs e ON e.trial_id = t.id ORDER BY t.id"):
            if len(out) == limit:
                break
            if type(n) is not int or n < 0:
                bad = f"its n_epochs is {_shown(n)}, not a count"
            else:
                bad = next(filter(None, (_series_problem(name, b, n) for name, b in
                                         zip(("epoch", *METRICS), (e1, e2, e3, e4, e5)))), None)
                bad = bad or _extras_problem(extra, n)
            if bad:
                out.append((rid, f"{label(rid, key)}: {bad}; the epochs row is damaged"))
        return out
    finally:
        conn.text_factory = saved


def old_problems(conn: sqlite3.Connection, version: int, limit: int | None = None) -> list[tuple[int, str]]:
    """The trials of a schema-1 or -2 store (no digests) whose rows cannot be read as polarity
    wrote them: its trials row (``_old_trial_problems``), then its epochs (``_v1_problems``,
    ``_v2_problems``); one (trials row id, text) per trial, at most ``limit``.  Export refuses
    the first, and so does ``store upgrade`` (it would seal the damage under a digest that
    matches it); ``store repair`` removes them all."""
    out = dict(_old_trial_problems(conn, limit))
    for rid, text in (_v1_problems if version == 1 else _v2_problems)(conn, limit):
        out.setdefault(rid, text)
    return list(out.items())[:limit]


def _frame_v1(conn: sqlite3.Connection):
    """The tidy frame of a schema-1 store (one epochs row per trial and epoch)."""
    import pandas as pd

    trials = pd.DataFrame.from_records(
        conn.execute("SELECT id, experiment, condition, n, width, trial FROM trials NOT INDEXED"
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
        df[k] = _float_if_numeric(epochs[k].iloc[order].reset_index(drop=True))
    return df[EPOCH_COLUMNS + keys]
