"""The ``.polarity`` file format: format 2 (one bit per sign, the free entries as a mask or a
varint list, a SHA-256 over every byte) written and read, format 1 read; every field checked
before anything is allocated.  The byte layout is in docs/templates.md."""
from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import torch

from .errors import TemplateError

MAGIC = b"PLTMPL\x00\x02"  # format 2; the last byte is the format
MAGIC_1 = b"PLTMPL\x00\x01"
FORMAT_VERSION = 2
_MAX_HEADER = 64 * 1024 * 1024
_MAX_DIMS = 64
_MAX_VARINT = 9  # bytes of one LEB128 gap: 9 * 7 = 63 bits
_DIGEST = 32
_ENTRY_KEYS_2 = frozenset({"name", "shape", "free", "free_count", "free_bytes", "sign_bytes"})

# what a reader returns, for core to wrap in a TemplateFile:
# (signs, meta, format, file_bytes, payload_bytes, encodings)
Decoded = tuple[dict[str, torch.Tensor], dict, int | str, int, int, dict[str, str]]


def _header(data: bytes, end: int, where: str) -> tuple[dict, int]:
    """The JSON header after the magic and its uint32 length, and the offset just past it."""
    start = len(MAGIC) + 4
    if len(data) < start:
        raise TemplateError(f"{where} is truncated or corrupt (shorter than its fixed prefix)")
    (hlen,) = struct.unpack("<I", data[len(MAGIC) : start])
    if hlen > _MAX_HEADER or start + hlen > end:
        raise TemplateError(f"{where} is truncated or corrupt (header of {hlen} bytes does not fit)")
    try:
        header = json.loads(data[start : start + hlen].decode())
    except (ValueError, RecursionError) as e:  # bad UTF-8, bad JSON, absurdly nested
        raise TemplateError(f"{where} has a corrupt header: {e}") from None
    if not isinstance(header, dict):
        raise TemplateError(f"{where} has a corrupt header (not a JSON object)")
    return header, start + hlen


def _field(d: dict, key: str, kind, where: str):
    v = d.get(key)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise TemplateError(
            f"{where}: header field {key!r} is {_short(v)}, expected {_kind_name(kind)}"
        )
    return v


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({int: "an integer", str: "a string", list: "a list", dict: "an object",
                        type(None): "null"}[k] for k in kinds)


def _count(d: dict, key: str, where: str) -> int:
    v = _field(d, key, int, where)
    if v < 0:
        raise TemplateError(f"{where}: header field {key!r} is negative ({v})")
    return v


def _common(header: dict, where: str) -> tuple[list[dict], dict]:
    """Checks shared by every format: the entries list, unique string names, shapes."""
    entries = _field(header, "entries", list, where)
    meta = header.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise TemplateError(f"{where}: header field 'meta' is not an object")
    version = header.get("version")
    if version is not None and not isinstance(version, str):
        raise TemplateError(f"{where}: header field 'version' is not a string")
    seen = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise TemplateError(f"{where}: entry {i} is not an object")
        name = _field(e, "name", str, f"{where}, entry {i}")
        if name in seen:
            raise TemplateError(f"{where}: duplicate entry name {_short(name)}")
        seen.add(name)
        shape = _field(e, "shape", list, f"{where}, entry {_short(name)}")
        if len(shape) > _MAX_DIMS or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ) or _numel([d for d in shape if d]) >= 2**62:  # numpy refuses it even when empty
            raise TemplateError(
                f"{where}: entry {_short(name)} has shape {_short(shape)}; expected at most "
                f"{_MAX_DIMS} non-negative integer dimensions whose product is below 2**62"
            )
    meta = dict(meta or {})
    meta.setdefault("library_version", version)
    return entries, meta


def _short(value, limit: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _bits(buf: bytes, count: int, what: str) -> np.ndarray:
    """``count`` little-endian bits of ``buf`` (whose length the caller checked) as bools; the
    padding bits of the last byte must be zero, so every template has exactly one encoding."""
    a = np.frombuffer(buf, np.uint8)
    if count % 8 and a[-1] >> (count % 8):
        raise TemplateError(f"{what} has non-zero padding bits")
    return np.unpackbits(a, count=count, bitorder="little").view(bool)


def _signs(negative: np.ndarray) -> np.ndarray:
    """+1 / -1 int8 from a bool array that is True where the sign is negative."""
    return 1 - 2 * negative.view(np.int8)


def _free_list_encode(idx: np.ndarray) -> bytes:
    """Sorted indices as LEB128 varints of their gaps minus one (the first: its index)."""
    gaps = (np.diff(idx, prepend=-1) - 1).astype(np.uint64)
    nbytes = np.ones(gaps.size, np.int64)
    for j in range(1, _MAX_VARINT):
        nbytes += gaps >= np.uint64(1 << (7 * j))
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    out = np.empty(int(ends[-1]), np.uint8)
    for j in range(int(nbytes.max())):
        sel = nbytes > j
        low = (gaps[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (nbytes[sel] > j + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + j] = (low | more).astype(np.uint8)
    return out.tobytes()


def _free_list_decode(buf: bytes, count: int, n: int, what: str) -> np.ndarray:
    """Inverse of :func:`_free_list_encode`; the varints must be exactly ``count`` minimal
    ones and every index inside ``[0, n)``."""
    a = np.frombuffer(buf, np.uint8)
    ends = np.flatnonzero(a < 0x80)
    if ends.size != count or ends[-1] != a.size - 1:
        raise TemplateError(f"{what}: the free-entry list does not hold {count} indices")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_VARINT or (a[ends[lengths > 1]] == 0).any():
        raise TemplateError(f"{what}: the free-entry list has an over-long index")
    shift = (7 * (np.arange(a.size) - np.repeat(starts, lengths))).astype(np.uint64)
    gaps = np.add.reduceat((a & 0x7F).astype(np.uint64) << shift, starts)
    if (gaps >= n).any():
        raise TemplateError(f"{what}: a free-entry index lies outside its tensor")
    # every gap is below n <= 2**62, so no partial sum overflows before one reaches n
    idx = np.cumsum(gaps.astype(np.int64) + 1) - 1
    if idx[-1] >= n:
        raise TemplateError(f"{what}: a free-entry index lies outside its tensor")
    return idx


def _encode_entry(name: str, t: torch.Tensor) -> tuple[dict, list[bytes]]:
    flat = t.reshape(-1).numpy()
    n = flat.size
    free = flat == 0
    k = int(np.count_nonzero(free))
    kind, free_part = "none", b""
    if k:
        mask_bytes = (n + 7) // 8
        kind = "mask"
        if k < mask_bytes:  # an index list needs at least one byte per index
            listed = _free_list_encode(np.flatnonzero(free))
            if len(listed) < mask_bytes:
                kind, free_part = "list", listed
        if kind == "mask":
            free_part = np.packbits(free, bitorder="little").tobytes()
    negative = (flat[~free] if k else flat) < 0
    sign_part = np.packbits(negative, bitorder="little").tobytes()
    entry = {"name": name, "shape": list(t.shape), "free": kind, "free_count": k,
             "free_bytes": len(free_part), "sign_bytes": len(sign_part)}
    return entry, [free_part, sign_part]


def _read_format2(data: bytes, where: str) -> Decoded:
    body_end = len(data) - _DIGEST
    digest = hashlib.sha256(memoryview(data)[: max(body_end, 0)]).digest()
    if body_end < len(MAGIC) + 4 or digest != data[body_end:]:
        raise TemplateError(f"{where} is truncated or corrupt (checksum mismatch)")
    header, start = _header(data, body_end, where)
    if header.get("format") != 2:
        raise TemplateError(
            f"{where} has format {_short(header.get('format'))} behind a format-2 prefix"
        )
    entries, meta = _common(header, where)
    payload = memoryview(data)[start:body_end]
    if _count(header, "payload_bytes", where) != len(payload):
        raise TemplateError(f"{where}: header says {header['payload_bytes']} payload bytes, "
                            f"found {len(payload)}")
    # every size is checked against the shape and the payload before anything is allocated
    layout, offset = [], 0
    for e in entries:
        what = f"{where}, entry {_short(e['name'])}"
        if set(e) != _ENTRY_KEYS_2:
            raise TemplateError(
                f"{what} has fields {_short(sorted(e))}, expected {sorted(_ENTRY_KEYS_2)}"
            )
        n = _numel(e["shape"])
        kind = e["free"] if isinstance(e["free"], str) else None
        k, fb, sb = (_count(e, key, what) for key in ("free_count", "free_bytes", "sign_bytes"))
        ok = {"none": k == 0 and fb == 0,
              "mask": 0 < k <= n and fb == (n + 7) // 8,
              "list": 0 < k <= n and k <= fb <= _MAX_VARINT * k}.get(kind, False)
        if not ok or k > n or sb != (n - k + 7) // 8:
            raise TemplateError(
                f"{what}: sizes do not fit shape {tuple(e['shape'])} ({n} entries): "
                f"free={_short(e['free'])}, free_count={k}, free_bytes={fb}, sign_bytes={sb}"
            )
        if offset + fb + sb > len(payload):
            raise TemplateError(f"{what} runs past the end of the payload")
        layout.append((e, n, kind, k, offset, offset + fb, offset + fb + sb))
        offset += fb + sb
    if offset != len(payload):
        raise TemplateError(f"{where}: the entries cover {offset} of {len(payload)} payload bytes")
    signs, encodings = {}, {}
    for e, n, kind, k, o_free, o_sign, o_end in layout:
        what = f"{where}, entry {_short(e['name'])}"
        constrained = _signs(_bits(payload[o_sign:o_end], n - k, what))
        if kind == "none":
            s = constrained
        elif kind == "mask":
            free = _bits(payload[o_free:o_sign], n, what)
            if int(np.count_nonzero(free)) != k:
                raise TemplateError(f"{what}: the free mask does not hold {k} entries")
            s = np.zeros(n, np.int8)
            s[~free] = constrained
        else:  # a free index i sits before constrained entry i - (free indices below i)
            idx = _free_list_decode(payload[o_free:o_sign], k, n, what)
            s = np.insert(constrained, idx - np.arange(k), 0)
        signs[e["name"]] = torch.from_numpy(s.reshape(e["shape"]))
        encodings[e["name"]] = kind
    return signs, meta, 2, len(data), len(payload), encodings


def _read_format1(data: bytes, where: str) -> Decoded:
    """Format 1 (polarity 0.1): a checksum over the payload only; every header field is
    validated here, and the runs must lie exactly where the format-1 writer put them."""
    header, start = _header(data, len(data), where)
    if header.get("format") != 1:
        raise TemplateError(
            f"{where} has format {_short(header.get('format'))} behind a format-1 prefix"
        )
    entries, meta = _common(header, where)
    payload = memoryview(data)[start:]
    if _count(header, "payload_bytes", where) != len(payload):
        raise TemplateError(f"{where} is truncated or corrupt: expected {header['payload_bytes']} "
                            f"payload bytes, found {len(payload)}")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise TemplateError(f"{where} is corrupt (payload checksum mismatch)")
    layout, offset = [], 0
    for e in entries:
        what = f"{where}, entry {_short(e['name'])}"
        n = _numel(e["shape"])
        runs = []
        for key in ("neg", "free"):
            run = e.get(key)
            if key == "free" and run is None:
                continue
            expected = [offset, (n + 7) // 8]  # the writer put each run right after the last
            if not (isinstance(run, list) and all(type(v) is int for v in run) and run == expected):
                raise TemplateError(f"{what}: {key} run {_short(run)} is not {expected}")
            runs.append(expected)
            offset += expected[1]
        if offset > len(payload):
            raise TemplateError(f"{what} runs past the end of the payload")
        layout.append((e, n, runs))
    if offset != len(payload):
        raise TemplateError(f"{where}: the entries cover {offset} of {len(payload)} payload bytes")
    signs, encodings = {}, {}
    for e, n, runs in layout:
        what = f"{where}, entry {_short(e['name'])}"
        (o, ln) = runs[0]
        s = _signs(_bits(payload[o : o + ln], n, what))
        if len(runs) == 2:
            (o, ln) = runs[1]
            s[_bits(payload[o : o + ln], n, what)] = 0
        signs[e["name"]] = torch.from_numpy(s.reshape(e["shape"]))
        encodings[e["name"]] = "mask" if len(runs) == 2 else "none"
    return signs, meta, 1, len(data), len(payload), encodings
