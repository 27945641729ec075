"""Templates as safetensors files any safetensors tool reads, written and strictly read back
(layout in docs/templates.md)."""
from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import torch

from .errors import TemplateError
from .fileformat import _MAX_HEADER, Decoded, _bits, _common, _count, _field, _numel, _short, _signs

ST_FORMAT = "polarity-template"
ST_VERSION = 1
_ST_KEYS = {"none": frozenset({"name", "shape", "free"}),
            "mask": frozenset({"name", "shape", "free", "free_count"}),
            "index": frozenset({"name", "shape", "free", "free_count"})}
_FREE_SUFFIX = ":free"


def _encode_safetensors_entry(name: str, t: torch.Tensor) -> tuple[dict, dict[str, np.ndarray]]:
    """Signs packed 8 per byte (1 = negative, free entries 0), and, when there are free
    entries, a packed mask or their sorted flat indices, whichever is smaller."""
    flat = t.reshape(-1).numpy()
    n = flat.size
    arrays = {name: np.packbits(flat < 0, bitorder="little")}
    entry = {"name": name, "shape": list(t.shape), "free": "none"}
    free = flat == 0
    k = int(np.count_nonzero(free))
    if k:
        dtype = np.int32 if n <= 2**31 else np.int64
        if k * np.dtype(dtype).itemsize < (n + 7) // 8:
            entry["free"], a = "index", np.flatnonzero(free).astype(dtype)
        else:
            entry["free"], a = "mask", np.packbits(free, bitorder="little")
        entry["free_count"] = k
        arrays[name + _FREE_SUFFIX] = a
    return entry, arrays


_ITEMSIZE = {"U8": 1, "I8": 1, "BOOL": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
             "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _describe_json(v) -> str:
    kind = {bool: "a boolean", int: "the number", float: "the number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)
    return f"{kind} {_short(v)}" if kind.startswith("the") else f"{kind} ({_short(v)})"


def _dtype(spec) -> str | None:
    """A tensor's dtype from a raw header entry (None unless a string: a crafted header may hold
    any JSON there)."""
    dtype = spec.get("dtype") if isinstance(spec, dict) else None
    return dtype if isinstance(dtype, str) else None


def _check_ranges(header: dict, body: int, where: str) -> None:
    """Every tensor's byte range, from the raw header: exactly the bytes its dtype and shape
    need, inside the ``body`` bytes after the header, and no byte shared by two tensors (what
    the reader relies on, whatever the safetensors library checks)."""
    ranges = []
    for key, spec in header.items():
        offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
        size = _ITEMSIZE.get(_dtype(spec))
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if (size is None or not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(v) is int and v >= 0 for v in offsets) or offsets[1] < offsets[0]
                or not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape)):
            raise TemplateError(f"{where}: tensor {_short(key)} has no valid dtype, shape and "
                                f"data_offsets ({_short(spec)})")
        need = _numel(shape) * size
        if offsets[1] - offsets[0] != need:
            raise TemplateError(f"{where}: tensor {_short(key)} needs {need} bytes for dtype "
                                f"{spec['dtype']} and shape {shape}, its data range holds "
                                f"{offsets[1] - offsets[0]}")
        if offsets[1] > body:
            raise TemplateError(f"{where}: tensor {_short(key)} runs past the end of the file")
        if need:
            ranges.append((offsets[0], offsets[1], key))
    ranges.sort()
    for (s0, e0, k0), (s1, e1, k1) in zip(ranges, ranges[1:]):
        if s1 < e0:
            raise TemplateError(f"{where}: the bytes of tensors {_short(k0)} and {_short(k1)} "
                                "overlap")


def _read_safetensors(data: bytes, where: str) -> Decoded:
    """A template in safetensors: the metadata and every tensor's dtype and shape are checked
    against each other before any sign is unpacked; every failure is a TemplateError."""
    import safetensors

    if len(data) < 8:
        raise TemplateError(f"{where} is truncated or corrupt (shorter than its fixed prefix)")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > _MAX_HEADER or 8 + hlen > len(data):
        raise TemplateError(f"{where} is truncated or corrupt (header of {hlen} bytes does not "
                            "fit)")
    try:
        header = json.loads(data[8 : 8 + hlen].decode())
    except (ValueError, RecursionError) as e:
        raise TemplateError(f"{where} has a corrupt safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise TemplateError(f"{where} has a corrupt safetensors header (not a JSON object)")
    md = header.pop("__metadata__", None)
    if not isinstance(md, dict) or md.get("format") != ST_FORMAT:
        raise TemplateError(f"{where} is a safetensors file but not a polarity template (its "
                            f"metadata lacks \"format\": \"{ST_FORMAT}\")")
    layout = md.get("polarity_format")
    if not isinstance(layout, str):  # safetensors metadata values are strings
        raise TemplateError(f"{where}: metadata field 'polarity_format' is "
                            f"{_describe_json(layout)}, but safetensors metadata values are "
                            f"strings; expected the string \"{ST_VERSION}\"")
    if layout != str(ST_VERSION):
        raise TemplateError(f"{where} has polarity safetensors layout {_short(layout)}; this "
                            f"polarity reads layout \"{ST_VERSION}\"")
    fields = {}
    for key in ("entries", "selection", "meta"):
        try:
            fields[key] = json.loads(_field(md, key, str, where))
        except (ValueError, RecursionError) as e:
            raise TemplateError(f"{where}: metadata field {key!r} is not JSON: {e}") from None
    entries, meta = _common({"entries": fields["entries"], "meta": fields["meta"],
                             "version": md.get("library_version")}, where)
    if fields["selection"] is not None and not isinstance(fields["selection"], dict):
        raise TemplateError(f"{where}: metadata field 'selection' is not an object or null")
    # the tensors the entries promise, with dtype and shape, before anything is read
    expected = {}
    for e in entries:
        what = f"{where}, entry {_short(e['name'])}"
        kind = e.get("free") if isinstance(e.get("free"), str) else None
        if kind not in _ST_KEYS or set(e) != _ST_KEYS[kind]:
            raise TemplateError(f"{what} has fields {_short(sorted(e))} and free="
                                f"{_short(e.get('free'))}; expected free 'none', 'mask' or "
                                "'index', and free_count unless 'none'")
        n = _numel(e["shape"])
        tensors = {e["name"]: ({"U8"}, [(n + 7) // 8])}
        if kind != "none":
            k = _count(e, "free_count", what)
            if not 0 < k <= n:
                raise TemplateError(f"{what}: free_count {k} does not fit shape "
                                    f"{tuple(e['shape'])} ({n} entries)")
            tensors[e["name"] + _FREE_SUFFIX] = (
                ({"U8"}, [(n + 7) // 8]) if kind == "mask" else ({"I32", "I64"}, [k]))
        for key in tensors:  # one tensor, one role: e.g. an entry 'a:free' is not a's free mask
            if key in expected:
                raise TemplateError(f"{where}: tensor {_short(key)} is claimed by two entries "
                                    f"(the signs of {_short(key)} and the free entries of "
                                    f"{_short(key[:-len(_FREE_SUFFIX)])}); each tensor has one role")
        expected.update(tensors)
    if set(header) != set(expected):
        extra, absent = sorted(set(header) - set(expected)), sorted(set(expected) - set(header))
        raise TemplateError(f"{where}: its tensors do not match its entries (unexpected: "
                            f"{_short(extra)}, missing: {_short(absent)})")
    for key, (dtypes, shape) in expected.items():
        spec = header[key]
        if _dtype(spec) not in dtypes or spec.get("shape") != shape:
            raise TemplateError(f"{where}: tensor {_short(key)} is {_short(spec)}; expected dtype "
                                f"{' or '.join(sorted(dtypes))} and shape {shape}")
    _check_ranges(header, len(data) - 8 - hlen, where)
    try:
        arrays = {k: v for k, v in safetensors.deserialize(data)}
    except Exception as e:  # the library's own structural checks (offsets, coverage)
        raise TemplateError(f"{where} is not a valid safetensors file: {e}") from None
    digest = hashlib.sha256()
    for key in expected:
        digest.update(arrays[key]["data"])
    if digest.hexdigest() != md.get("sha256"):
        raise TemplateError(f"{where} is truncated or corrupt (checksum mismatch)")
    signs, encodings, payload = {}, {}, 0
    for e in entries:
        name, n, kind = e["name"], _numel(e["shape"]), e["free"]
        what = f"{where}, entry {_short(name)}"
        raw = bytes(arrays[name]["data"])
        if len(raw) != (n + 7) // 8:  # checked by _check_ranges; a reader never pads
            raise TemplateError(f"{what}: {len(raw)} sign bytes for {n} signs")
        payload += len(raw)
        negative = _bits(raw, n, what)
        s = _signs(negative)
        if kind != "none":
            a = arrays[name + _FREE_SUFFIX]
            payload += len(a["data"])
            if kind == "mask":
                free = _bits(bytes(a["data"]), n, what)
            else:
                idx = np.frombuffer(a["data"], "<i4" if a["dtype"] == "I32" else "<i8")
                if idx[0] < 0 or idx[-1] >= n or (np.diff(idx) <= 0).any():
                    raise TemplateError(f"{what}: free indices are not increasing inside [0, {n})")
                free = np.zeros(n, bool)
                free[idx] = True
            if int(np.count_nonzero(free)) != e["free_count"]:
                raise TemplateError(f"{what}: the free mask does not hold {e['free_count']} "
                                    "entries")
            if (free & negative).any():
                raise TemplateError(f"{what}: a free entry has its sign bit set")
            s[free] = 0
        signs[name] = torch.from_numpy(s.reshape(e["shape"]))
        encodings[name] = kind
    if fields["selection"] is not None:
        meta.setdefault("selection", fields["selection"])
    return signs, meta, "safetensors", len(data), payload, encodings
