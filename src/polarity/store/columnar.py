"""The columnar encoding of one trial for the store (schema 2): its per-epoch series and extras
as BLOBs, encoded by the worker (``pack_trial``) so that the driver only inserts bytes, and
decoded whole.  See ``docs/engine.md``.

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
"""
from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..experiments.base import EpochColumns, ExperimentError, TrialKey, TrialResult
from .schema import METRICS

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
    number or missing (and every integer is exact in float64, |v| <= 2**53), else JSON values
    (see the module docstring)."""
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
                pass  # beyond int64: JSON values keep it exactly
        # numbers with gaps become float64 with NaN, unless an integer would lose digits there
        exact = all(not isinstance(v, int) or abs(v) <= 2**53 for v in values)
        if a is None and exact and kinds <= {int, float, type(None)}:
            a = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
        if a is None:
            return [key, "json", values], b""
    a = _narrow(a)
    body = a.tobytes()
    return [key, a.dtype.str, len(body)], body


def encode_extras(keys: Iterable[str], records: Sequence[Mapping[str, Any] | None]) -> bytes | None:
    """The per-epoch extras of one trial as one BLOB (None when it has none)."""
    return _encode_extra_columns(_by_key(keys, records))


def _by_key(keys: Iterable[str], records: Sequence[Mapping[str, Any] | None]) -> dict[str, list]:
    """key -> every record's value (None where a record lacks it)."""
    return {k: [r.get(k) if r else None for r in records] for k in keys}


def _encode_extra_columns(columns: Mapping[str, list]) -> bytes | None:
    """``encode_extras`` of its ``_by_key`` columns."""
    if not columns:
        return None
    header, bodies = [], []
    for k in sorted(columns):
        entry, body = _extra_entry(str(k), columns[k])
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
    if isinstance(eps, EpochColumns):  # read from the columns: no object per epoch
        epoch = np.asarray(eps.epoch, dtype=np.int64)
        m = np.stack([np.asarray(getattr(eps, k), dtype=np.float64) for k in METRICS], axis=1)
        extras = {k: np.asarray(v).tolist() for k, v in eps.extra.items()}
    else:
        epoch = np.fromiter((e.epoch for e in eps), dtype=np.int64, count=n)
        metrics = operator.attrgetter(*METRICS)
        m = np.array([metrics(e) for e in eps], dtype=np.float64).reshape(n, len(METRICS))
        records = [e.extra for e in eps]
        keys: set[str] = set()
        for x in records:
            if x:
                keys.update(x)
        extras = _by_key(keys, records)
    if n > 1 and not (np.diff(epoch) > 0).all():
        order = np.argsort(epoch, kind="stable")
        epoch, m = epoch[order], m[order]
        extras = {k: [v[i] for i in order] for k, v in extras.items()}
        dup = epoch[1:][np.diff(epoch) == 0]
        if len(dup):
            raise ExperimentError(f"trial {r.key}: epoch {int(dup[0])} is recorded twice")
    series = (encode_series(epoch), *(encode_series(m[:, i]) for i in range(len(METRICS))))
    return PackedTrial(r.key, int(r.seed), float(r.wall_s), n, series, _encode_extra_columns(extras),
                       _json(r.extra or {}))
