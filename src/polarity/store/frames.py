"""The tidy frame of a store's epochs: one row per trial and epoch, columns
``experiment, condition, n, width, trial, epoch, train_loss, train_acc, val_loss, val_acc`` plus
one column per per-epoch extra key.  Schema 2's is built from whole arrays without a Python
object per row; a schema-1 store gives the same frame.  See ``docs/engine.md``.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Sequence

import numpy as np

from ..experiments.base import gc_paused
from .columnar import _decode_column
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


def _v1_problem(conn: sqlite3.Connection) -> str | None:
    """The first schema-1 epoch row (of a trial) that cannot be read as polarity wrote it: a
    metric that is not a number (or NULL), an epoch that is not an integer, an extra that is not
    a JSON object; None when every row reads."""
    checks = [f"typeof(e.{m}) NOT IN ('real', 'integer', 'null')" for m in METRICS]
    names = " ".join(f"WHEN {c} THEN '{m}'" for c, m in zip(checks, METRICS))
    bad_extra = ("(e.extra IS NOT NULL AND CASE WHEN json_valid(e.extra) THEN json_type(e.extra) != 'object'"
                 " ELSE 1 END)")
    row = conn.execute(
        f"SELECT t.condition, t.n, t.width, t.trial, t.id, e.epoch, CASE {names} WHEN typeof(e.epoch) != 'integer'"
        f" THEN 'epoch' ELSE 'extra' END FROM epochs e JOIN trials t ON t.id = e.trial_id"
        f" WHERE {' OR '.join(checks)} OR typeof(e.epoch) != 'integer' OR {bad_extra} LIMIT 1").fetchone()
    if row is None:
        return None
    cond, n, w, t, rid, epoch, col = row
    value = conn.execute(f"SELECT {col} FROM epochs WHERE trial_id = ? AND epoch IS ?", (rid, epoch)).fetchone()
    shown = repr(value[0])[:60] if value else "?"
    want = "a JSON object" if col == "extra" else "an integer" if col == "epoch" else "a number"
    return (f"trial {cond!r} n={n} width={w} trial={t} (row {rid}), epoch {epoch!r}: its {col} is {shown}, not "
            f"{want}; the schema-1 row is damaged")


def _old_trial_problem(conn: sqlite3.Connection) -> str | None:
    """The first trials row of a schema-1 or -2 store (no digests) that cannot be read as polarity
    wrote it: a key (n, width, trial) that is not an integer, a wall time that is not a number,
    hardware or extra that is not a JSON object; None when every row reads.  ``store upgrade``
    would otherwise seal such a row under a digest that matches it."""
    ints = [f"typeof({c}) != 'integer'" for c in ("n", "width", "trial")]
    objs = [f"({c} IS NOT NULL AND {c} != '' AND CASE WHEN json_valid({c}) THEN json_type({c}) != 'object' ELSE 1 END)"
            for c in ("hardware", "extra")]
    wall = "typeof(wall_s) NOT IN ('real', 'integer', 'null')"
    cols = ("n", "width", "trial", "hardware", "extra", "wall_s")
    which = " ".join(f"WHEN {c} THEN '{name}'" for c, name in zip((*ints, *objs, wall), cols))
    row = conn.execute(f"SELECT id, condition, n, width, trial, CASE {which} END FROM trials NOT INDEXED"
                       f" WHERE {' OR '.join((*ints, *objs, wall))} LIMIT 1").fetchone()
    if row is None:
        return None
    rid, cond, n, w, t, col = row
    (value,) = conn.execute(f"SELECT {col} FROM trials WHERE id = ?", (rid,)).fetchone()
    want = "an integer" if col in ("n", "width", "trial") else "a number" if col == "wall_s" else "a JSON object"
    return (f"trial {cond!r} n={n!r} width={w!r} trial={t!r} (row {rid}): its {col} is {repr(value)[:60]}, not "
            f"{want}; the trials row is damaged")


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
