"""Per-trial integrity of the results store (schema 3; see ``docs/engine.md``).

Every ``trials`` row carries ``digest``: a BLAKE2b-128 over its columns and those of its
``epochs`` row, each value tagged with its SQLite storage class, so a changed value, a TEXT read
as a BLOB, a lost epochs row or a row whose key was changed is found before anything is read.
``run.trial_count``, kept in each commit's transaction, finds a trial row that vanished (a
damaged page).  ``check`` lists what does not fit: a row whose digest does not match, a trial
without its epochs row or an epochs row without its trial, a key recorded twice, a row outside
the spec's grid, a count that differs; each problem names the trial.
"""
from __future__ import annotations

import hashlib
import sqlite3
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

TRIAL_FIELDS = ("experiment", "condition", "n", "width", "trial", "seed", "status", "wall_s", "hardware",
                "version", "hparams", "extra", "job", "finished_at")
EPOCH_FIELDS = ("n_epochs", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "extra")
COUNT_KEY = "trial_count"
_TAG = b"polarity-trial-digest-1"


class Text(bytes):
    """A TEXT value as read for verification (its raw UTF-8 bytes), told apart from a BLOB."""


def _canon(v: Any) -> bytes:
    """One value as SQLite returns it, tagged by storage class (NaN and NULL alike: SQLite
    stores a NaN REAL as NULL; -0.0 as 0.0: a REAL column keeps integral values as integers)."""
    if v is None or isinstance(v, float) and v != v:
        return b"N"
    if isinstance(v, Text):
        return b"T" + len(v).to_bytes(8, "little") + v
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        return b"T" + len(b).to_bytes(8, "little") + b
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        return b"B" + len(b).to_bytes(8, "little") + b
    if isinstance(v, float):
        return b"F" + struct.pack("<d", v + 0.0)
    if isinstance(v, int):
        b = str(int(v)).encode()
        return b"I" + len(b).to_bytes(8, "little") + b
    raise TypeError(f"cannot digest a {type(v).__name__}")


def trial_digest(trial: Sequence[Any], epochs: Sequence[Any]) -> str:
    """The digest of one trial: its ``TRIAL_FIELDS`` and its epochs row's ``EPOCH_FIELDS``, as
    written (the commit) or as read (``check``)."""
    h = hashlib.blake2b(_TAG, digest_size=16)
    for v in (*trial, *epochs):
        h.update(_canon(v))
    return h.hexdigest()


@dataclass(frozen=True)
class Problem:
    row: int | None  # the trials row id (None: not one row, e.g. the count)
    label: str  # the trial, as far as its key can be read
    what: str

    def __str__(self) -> str:
        return f"{self.label} {self.what}" if self.label else self.what


def _text(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def label(row_id: Any, key: Sequence[Any]) -> str:
    """'trial <condition> n=.. width=.. trial=.. (row id)' from values that may be damaged."""
    cond, n, w, t = (_text(k) for k in key)
    return f"trial {cond!r} n={n} width={w} trial={t} (row {row_id})"


def _select(fields: Iterable[str], alias: str) -> str:
    return ", ".join(f"{alias}.{f}" for f in fields)


def check(conn: sqlite3.Connection, grid: "Grid | None" = None) -> list[Problem]:
    """Every problem of a schema-3 store (empty: it is whole).  Reads every row once, through the
    tables themselves (never an index, which a damaged file may contradict)."""
    saved = conn.text_factory
    conn.text_factory = Text
    try:
        rows = conn.execute(
            f"SELECT t.id, {_select(TRIAL_FIELDS, 't')}, t.digest, e.trial_id, {_select(EPOCH_FIELDS, 'e')}"
            " FROM trials t NOT INDEXED LEFT JOIN epochs e ON e.trial_id = t.id")
        problems: list[Problem] = []
        seen: dict[tuple, int] = {}
        n_rows = n_joined = 0
        nt = len(TRIAL_FIELDS)
        for r in rows:
            n_rows += 1
            rid, trial, digest, eid, epochs = r[0], r[1:1 + nt], r[1 + nt], r[2 + nt], r[3 + nt:]
            key = trial[1:5]
            name = label(rid, key)
            if eid is None:
                problems.append(Problem(rid, name, "has no epochs row (its series are lost)"))
                continue
            n_joined += 1
            if not isinstance(digest, Text) or trial_digest(trial, epochs) != digest.decode("ascii", "replace"):
                problems.append(Problem(rid, name, "does not match its digest (its row or its series changed "
                                                   "after they were written)"))
                continue
            k = (trial[0], *key)
            if k in seen:
                problems.append(Problem(rid, name, f"is recorded twice (rows {seen[k]} and {rid})"))
                continue
            seen[k] = rid
            if grid is not None:
                bad = grid.misfit(_text(trial[0]), _text(key[0]), *key[1:])
                if bad:
                    problems.append(Problem(rid, name, f"does not fit the run's spec: {bad}"))
        (n_epochs,) = conn.execute("SELECT count(*) FROM epochs").fetchone()
        if n_epochs > n_joined:
            problems.append(Problem(None, "", f"{n_epochs - n_joined} epochs row(s) belong to no trial"))
        count = conn.execute("SELECT value FROM run WHERE key = ?", (COUNT_KEY,)).fetchone()
        try:
            recorded = int(bytes(count[0]).decode("ascii")) if count else 0
        except (TypeError, ValueError):
            recorded = None
        if recorded != n_rows:  # first: the most basic fact
            lost = " (rows were lost)" if recorded is not None and recorded > n_rows else ""
            problems.insert(0, Problem(None, "", f"holds {n_rows} trial rows, but "
                                       f"{'an unreadable number of' if recorded is None else recorded} were "
                                       f"committed{lost}"))
        return problems
    finally:
        conn.text_factory = saved


class Grid:
    """The trials a run's spec has (``experiment``, and the keys of its grid): a row outside it is
    refused, with the field that does not fit."""

    def __init__(self, experiment: str, keys: Iterable[Any]):
        self.experiment = experiment
        self.keys = {(k.condition, int(k.n), int(k.width), int(k.trial)) for k in keys}
        self.fields = [sorted({k[i] for k in self.keys}, key=str) for i in range(4)]

    def misfit(self, experiment: str, condition: str, n: Any, width: Any, trial: Any) -> str:
        if experiment != self.experiment:
            return f"experiment {experiment!r}, not {self.experiment!r}"
        key = (condition, n, width, trial)
        if key in self.keys:
            return ""
        for i, name in enumerate(("condition", "n", "width", "trial")):
            if key[i] not in self.fields[i]:
                return f"unknown {name} {key[i]!r}"
        return f"({condition}, n={n}, width={width}, trial={trial}) is not in its grid"
