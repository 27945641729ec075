"""Polarity templates: for each constrained parameter, the sign each entry must keep.

A :class:`Template` is an immutable mapping ``parameter name -> int8 tensor`` with entries
``+1`` / ``-1`` (the sign the weight must keep) or ``0`` (the entry is unconstrained), plus
metadata (where it came from, the library version).  Templates are plain CPU tensors keyed by
the names of ``module.named_parameters()``, so they work with any ``nn.Module``.

Which parameters are constrained
--------------------------------
By default the weights of linear and convolutional layers: every floating parameter with
``dim >= 2``.  ``biases=True`` adds the 1-d parameters whose name ends in ``bias``.  ``include``
and ``exclude`` are glob patterns (``fnmatch``) on parameter names that filter that set, e.g.
``include=["features.*"]`` or ``exclude=["classifier.6.*"]``.

Exact zeros
-----------
``Template.from_module`` maps an exactly-zero weight to ``0`` (unconstrained), as the reference
implementation does (it tests ``W * T < 0``, so a zero template entry never triggers a reset).
Pass ``zero=+1`` or ``zero=-1`` to constrain such entries to a sign instead.

File format
-----------
``template.save(path)`` writes one bit per sign: an 8-byte magic, a little-endian uint32 header
length, a UTF-8 JSON header (names, shapes, offsets, source, metadata, library version, SHA-256
of the payload), then the payload: for each parameter its bit-packed "negative" mask and, only
when the parameter has unconstrained entries, a second bit-packed "free" mask.  A torchvision
AlexNet template is ~7.6 MB against ~244 MB for its float32 state dict (1/32).
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

MAGIC = b"PLTMPL\x00\x01"
FORMAT_VERSION = 1
_MAX_HEADER = 64 * 1024 * 1024

Patterns = str | Sequence[str] | None


class TemplateError(ValueError):
    """A template that does not fit a model, a bad file, or bad values."""


def _version() -> str:
    from . import __version__

    return __version__


def _patterns(p: Patterns) -> tuple[str, ...] | None:
    if p is None:
        return None
    return (p,) if isinstance(p, str) else tuple(p)


def _named_tensors(obj: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return dict(obj.named_parameters())
    if isinstance(obj, Mapping):
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    raise TypeError(f"expected an nn.Module or a state dict, got {type(obj).__name__}")


def select_names(
    tensors: Mapping[str, torch.Tensor],
    include: Patterns = None,
    exclude: Patterns = None,
    biases: bool = False,
) -> list[str]:
    """The names a template constrains by default (see the module docstring)."""
    inc, exc = _patterns(include), _patterns(exclude)
    out = []
    for name, t in tensors.items():
        if not t.is_floating_point():
            continue
        if not (t.dim() >= 2 or (biases and t.dim() == 1 and name.endswith("bias"))):
            continue
        if inc is not None and not any(fnmatch.fnmatchcase(name, p) for p in inc):
            continue
        if exc is not None and any(fnmatch.fnmatchcase(name, p) for p in exc):
            continue
        out.append(name)
    return out


def _as_signs(name: str, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TemplateError(f"template entry {name!r} is a {type(t).__name__}, expected a tensor")
    if t.dtype == torch.bool or t.is_complex():
        raise TemplateError(
            f"template entry {name!r} has dtype {t.dtype}; signs must be an integer or floating "
            "tensor of +1 / -1 / 0"
        )
    t = t.detach().to("cpu")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise TemplateError(f"template entry {name!r} has non-finite values")
    if t.numel() and not ((t == 1) | (t == -1) | (t == 0)).all():
        bad = t[~((t == 1) | (t == -1) | (t == 0))][:3].tolist()
        raise TemplateError(
            f"template entry {name!r} (dtype {t.dtype}) must hold only +1, -1 or 0; found e.g. {bad}"
        )
    return t.to(torch.int8).contiguous()


class Template(Mapping):
    """An immutable mapping ``parameter name -> int8 sign tensor`` (+1 / -1 / 0 = free)."""

    __slots__ = ("_signs", "_meta")

    def __init__(self, signs: Mapping[str, torch.Tensor], meta: Mapping | None = None):
        self._signs = {str(k): _as_signs(str(k), v) for k, v in signs.items()}
        self._meta = dict(meta or {})

    # ----------------------------------------------------------------- constructors
    @classmethod
    def random(
        cls,
        module: nn.Module | Mapping[str, torch.Tensor],
        seed: int | None = None,
        include: Patterns = None,
        exclude: Patterns = None,
        biases: bool = False,
    ) -> "Template":
        """Independent Bernoulli(0.5) signs for the selected parameters.  ``seed=None`` draws
        from torch's global generator (so ``torch.manual_seed`` makes it reproducible)."""
        tensors = _named_tensors(module)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        signs = {}
        for name in select_names(tensors, include, exclude, biases):
            bits = torch.randint(0, 2, tuple(tensors[name].shape), generator=gen, dtype=torch.int8)
            signs[name] = bits * 2 - 1
        return cls(signs, {"source": "random", "seed": seed})

    @classmethod
    def from_module(
        cls,
        module_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
        include: Patterns = None,
        exclude: Patterns = None,
        biases: bool = False,
        zero: int = 0,
        source: str = "module",
    ) -> "Template":
        """The signs of existing (e.g. pretrained) weights.  Exact zeros become ``zero``
        (0 = unconstrained by default, as in the reference)."""
        if zero not in (-1, 0, 1):
            raise TemplateError(f"zero must be -1, 0 or +1, got {zero!r}")
        tensors = _named_tensors(module_or_state_dict)
        signs = {}
        for name in select_names(tensors, include, exclude, biases):
            s = torch.sign(tensors[name].detach().to("cpu", torch.float32)).to(torch.int8)
            if zero:
                s[s == 0] = zero
            signs[name] = s
        return cls(signs, {"source": source})

    @classmethod
    def from_init(cls, module: nn.Module, **kwargs) -> "Template":
        """The signs of the module's current (initial) weights: the paper's RAND template."""
        return cls.from_module(module, source="init", **kwargs)

    # ----------------------------------------------------------------- mapping protocol
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._signs[name].clone()

    def __iter__(self) -> Iterator[str]:
        return iter(self._signs)

    def __len__(self) -> int:
        return len(self._signs)

    def __contains__(self, name: object) -> bool:
        return name in self._signs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return self._signs.keys() == other._signs.keys() and all(
            torch.equal(v, other._signs[k]) for k, v in self._signs.items()
        )

    def __hash__(self):  # mutable tensors inside: not hashable
        raise TypeError("Template is not hashable")

    def __repr__(self) -> str:
        src = self._meta.get("source", "?")
        return f"Template({len(self)} tensors, {self.numel():,} signs, source={src!r})"

    @property
    def meta(self) -> dict:
        return dict(self._meta)

    def numel(self) -> int:
        return sum(t.numel() for t in self._signs.values())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self._signs.items()}

    def sign_tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors without copying (treat them as read-only)."""
        return dict(self._signs)

    # ----------------------------------------------------------------- transformations
    def select(self, include: Patterns = None, exclude: Patterns = None) -> "Template":
        inc, exc = _patterns(include), _patterns(exclude)
        keep = {
            k: v
            for k, v in self._signs.items()
            if (inc is None or any(fnmatch.fnmatchcase(k, p) for p in inc))
            and not (exc is not None and any(fnmatch.fnmatchcase(k, p) for p in exc))
        }
        return Template(keep, self._meta)

    def rename(self, mapping: Mapping[str, str] | Callable[[str], str | None]) -> "Template":
        """Rename entries: a dict ``old -> new`` (names not in it keep their name) or a function
        returning the new name (``None`` drops the entry)."""
        fn = (lambda k: mapping.get(k, k)) if isinstance(mapping, Mapping) else mapping
        out: dict[str, torch.Tensor] = {}
        for k, v in self._signs.items():
            new = fn(k)
            if new is None:
                continue
            if new in out:
                raise TemplateError(f"renaming maps two entries onto {new!r}")
            out[new] = v
        return Template(out, self._meta)

    def adapt(
        self,
        module: nn.Module,
        rename: Mapping[str, str] | Callable[[str], str | None] | None = None,
        drop: Patterns = (),
        missing: str = "random",
        seed: int | None = None,
    ) -> "Template":
        """Map this template onto ``module`` whose names or heads may differ.

        ``rename`` renames entries first; entries matching a ``drop`` pattern are discarded
        (e.g. an ImageNet head).  Every remaining entry must name a parameter of ``module`` with
        the same shape, otherwise a :class:`TemplateError` names it and both shapes.  Parameters
        of ``module`` that the template's selection rule would constrain but that have no entry
        (a new head) get ``missing``: ``"random"`` signs (seeded by ``seed``), ``"free"`` (left
        unconstrained) or ``"error"``.
        """
        if missing not in ("random", "free", "error"):
            raise TemplateError(f"missing must be 'random', 'free' or 'error', got {missing!r}")
        t = self.rename(rename) if rename is not None else self
        if drop:
            t = t.select(exclude=drop)
        params = dict(module.named_parameters())
        t.check(params)
        biases = any(v.dim() == 1 for v in t._signs.values())
        uncovered = [n for n in select_names(params, biases=biases) if n not in t]
        signs = dict(t._signs)
        if uncovered and missing == "error":
            raise TemplateError(f"template has no entry for model parameter(s) {uncovered}")
        if uncovered and missing == "random":
            signs.update(Template.random({n: params[n] for n in uncovered}, seed=seed,
                                         biases=biases)._signs)
        meta = dict(self._meta)
        meta["adapted"] = {"random" if missing == "random" else "free": uncovered}
        return Template(signs, meta)

    # ----------------------------------------------------------------- checks and measures
    def check(self, module: nn.Module | Mapping[str, torch.Tensor]) -> None:
        """Raise :class:`TemplateError` unless every entry names a parameter of the same shape."""
        params = _named_tensors(module)
        missing = [k for k in self._signs if k not in params]
        if missing:
            near = ", ".join(list(params)[:8]) + (", ..." if len(params) > 8 else "")
            raise TemplateError(
                f"template entries {missing[:5]}{' ...' if len(missing) > 5 else ''} match no "
                f"parameter of the model (its parameters: {near}); was the template made for "
                "another model? Use Template.adapt(model, rename=..., drop=...)"
            )
        for k, v in self._signs.items():
            if tuple(params[k].shape) != tuple(v.shape):
                raise TemplateError(
                    f"shape mismatch for {k!r}: template {tuple(v.shape)} vs model "
                    f"{tuple(params[k].shape)}"
                )

    def _weights(self, module) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, detached weight, sign tensor on the weight's device) after a :meth:`check`."""
        self.check(module)
        params = _named_tensors(module)
        for k, t in self._signs.items():
            w = params[k].detach()
            yield k, w, t.to(w.device)

    @torch.no_grad()
    def violations(self, module: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Entries with ``W * T < 0`` per parameter."""
        return {k: int(((w * t.to(w.dtype)) < 0).sum()) for k, w, t in self._weights(module)}

    @torch.no_grad()
    def agreement(self, module: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Fraction of constrained entries whose sign equals the template's, per parameter
        (zeros do not agree)."""
        out = {}
        for k, w, t in self._weights(module):
            mask = t != 0
            n = int(mask.sum())
            same = int(((torch.sign(w).to(torch.int8) == t) & mask).sum())
            out[k] = same / n if n else float("nan")
        return out

    # ----------------------------------------------------------------- storage
    def save(self, path: str | os.PathLike) -> Path:
        """Write the template (one bit per sign plus metadata) atomically to ``path``."""
        path = Path(path)
        entries, chunks, offset = [], [], 0
        for name, t in self._signs.items():
            flat = t.reshape(-1).numpy()
            neg = np.packbits(flat < 0, bitorder="little").tobytes()
            entry = {"name": name, "shape": list(t.shape), "neg": [offset, len(neg)], "free": None}
            chunks.append(neg)
            offset += len(neg)
            if (flat == 0).any():
                free = np.packbits(flat == 0, bitorder="little").tobytes()
                entry["free"] = [offset, len(free)]
                chunks.append(free)
                offset += len(free)
            entries.append(entry)
        payload = b"".join(chunks)
        header = {
            "format": FORMAT_VERSION,
            "library": "polarity",
            "version": _version(),
            "meta": _jsonable(self._meta),
            "entries": entries,
            "payload_bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        hbytes = json.dumps(header, sort_keys=True).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + struct.pack("<I", len(hbytes)) + hbytes + payload)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Template":
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise TemplateError(f"template file not found: {path}") from None
        where = f"template file {path}"
        if len(data) < len(MAGIC) + 4 or data[: len(MAGIC)] != MAGIC:
            raise TemplateError(f"{where} is not a polarity template (bad magic bytes)")
        (hlen,) = struct.unpack("<I", data[len(MAGIC) : len(MAGIC) + 4])
        start = len(MAGIC) + 4
        if hlen > _MAX_HEADER or start + hlen > len(data):
            raise TemplateError(f"{where} is truncated or corrupt (header of {hlen} bytes does not fit)")
        try:
            header = json.loads(data[start : start + hlen].decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TemplateError(f"{where} has a corrupt header: {e}") from None
        if header.get("format") != FORMAT_VERSION:
            raise TemplateError(
                f"{where} has format {header.get('format')!r}; this polarity reads format {FORMAT_VERSION}"
            )
        payload = data[start + hlen :]
        try:
            expected = int(header["payload_bytes"])
            digest = header["sha256"]
            entries = list(header["entries"])
        except (KeyError, TypeError, ValueError) as e:
            raise TemplateError(f"{where} has a corrupt header (missing or bad field {e})") from None
        if len(payload) != expected:
            raise TemplateError(
                f"{where} is truncated or corrupt: expected {expected} payload bytes, found "
                f"{len(payload)}"
            )
        if hashlib.sha256(payload).hexdigest() != digest:
            raise TemplateError(f"{where} is corrupt (payload checksum mismatch)")
        signs = {}
        try:
            for e in entries:
                shape = tuple(int(d) for d in e["shape"])
                n = int(np.prod(shape, dtype=np.int64))
                o, ln = e["neg"]
                neg = np.unpackbits(np.frombuffer(payload, np.uint8, ln, o), count=n, bitorder="little")
                s = 1 - 2 * neg.astype(np.int8)
                if e["free"] is not None:
                    o, ln = e["free"]
                    free = np.unpackbits(np.frombuffer(payload, np.uint8, ln, o), count=n,
                                         bitorder="little")
                    s[free.astype(bool)] = 0
                signs[str(e["name"])] = torch.from_numpy(s.reshape(shape))
        except (KeyError, TypeError, ValueError) as e:
            raise TemplateError(f"{where} has a corrupt header entry ({e})") from None
        meta = dict(header.get("meta") or {})
        meta.setdefault("library_version", header.get("version"))
        return cls(signs, meta)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def iter_pairs(
    template: Template, module: nn.Module
) -> Iterable[tuple[str, nn.Parameter, torch.Tensor]]:
    """(name, parameter, stored sign tensor) for every template entry, after a check."""
    template.check(module)
    params = dict(module.named_parameters())
    for name, t in template.sign_tensors().items():
        yield name, params[name], t
