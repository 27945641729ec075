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

Names, wrappers and tied parameters
-----------------------------------
:func:`bind` matches entries to a model, in one place: by name, else through the prefixes that
wrappers add (``_orig_mod.`` of ``torch.compile``, ``module.`` of DDP / DataParallel), so one
template fits a model and its wrapped self.  A parameter tied under several names (an embedding
shared with the output layer) is constrained once; a template that gives two of its names
different signs is an error.  ``random`` and ``from_module`` record their selection rule in the
metadata (``meta["selection"]``).

Exact zeros
-----------
``Template.from_module`` maps an exactly-zero weight to ``0`` (unconstrained), as the reference
implementation does (it tests ``W * T < 0``, so a zero template entry never triggers a reset).
Pass ``zero=+1`` or ``zero=-1`` to constrain such entries to a sign instead.

Non-finite weights
------------------
A NaN weight has no sign: ``from_module`` leaves its entry unconstrained (0) and warns, as it does
for infinite weights (which keep their sign).  :meth:`Template.violations` counts a NaN weight
under a nonzero entry as a violation and :meth:`Template.agreement` as a disagreement, although
Freeze-SGD (which resets ``W * T < 0``) cannot repair it.

File format
-----------
``template.save(path)`` writes format 2, about one bit per sign::

    magic    8 bytes   b"PLTMPL\\x00\\x02"
    length   uint32    little-endian length of the header
    header   JSON      format, library version, meta, payload_bytes and per entry: name, shape,
                       free ("none" | "mask" | "list"), free_count, free_bytes, sign_bytes
    payload            per entry, in header order: its free entries, then one bit per
                       constrained entry (1 = negative, little-endian bit order, C order)
    digest   32 bytes  SHA-256 of every byte before it (the header included)

The free (zero) entries of a tensor are stored as whichever is smaller: a dense bit mask, or the
sorted indices as LEB128 varints of the gaps between them (minus one), so a handful of exact zeros
in a large tensor costs a few bytes rather than a second bit per sign.  The reader checks the
digest, then every header field against the shapes and the payload length before it allocates
anything; every failure is a :class:`TemplateError`.  Format 1 files (polarity 0.1: a second dense
mask whenever a tensor had a free entry, a checksum over the payload only) still load, with the
same field checks.  A torchvision AlexNet template is ~7.6 MB against ~244 MB for its float32
state dict (1/32).

Safetensors interchange
-----------------------
``template.save("x.safetensors")`` writes a file any safetensors tool reads: per entry a ``U8``
tensor under the entry's name holding its signs packed 8 per byte (1 = negative, little-endian
bit order, C order; free entries 0), and, only when the entry has free entries, a tensor
``<name>:free``: a packed ``U8`` mask, or the sorted flat indices (``I32``, ``I64`` past 2**31
entries) when that is smaller.  The metadata holds ``format`` = ``polarity-template``,
``polarity_format`` = ``1``, ``library_version``, ``entries`` (JSON: name, shape, free = none |
mask | index, free_count), ``selection`` (JSON, the selection rule or null), ``meta`` (JSON) and
``sha256`` over every tensor's bytes in entry order.  :meth:`Template.load` tells the two formats
apart by their first bytes and checks a safetensors file as strictly: metadata, then every
tensor's dtype and shape against the entries, then the digest, padding bits, masks and indices.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import struct
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .files import atomic_write

MAGIC = b"PLTMPL\x00\x02"  # format 2; the last byte is the format
MAGIC_1 = b"PLTMPL\x00\x01"
FORMAT_VERSION = 2
_MAX_HEADER = 64 * 1024 * 1024
_MAX_DIMS = 64
_MAX_VARINT = 9  # bytes of one LEB128 gap: 9 * 7 = 63 bits
_DIGEST = 32
_ENTRY_KEYS_2 = frozenset({"name", "shape", "free", "free_count", "free_bytes", "sign_bytes"})

Patterns = str | Sequence[str] | None


class TemplateError(ValueError):
    """A template that does not fit a model, a bad file, or bad values."""


def _version() -> str:
    from ._version import __version__

    return __version__


def _patterns(p: Patterns) -> tuple[str, ...] | None:
    if p is None:
        return None
    return (p,) if isinstance(p, str) else tuple(p)


def _named_tensors(obj: nn.Module | Mapping[str, torch.Tensor],
                   aliases: bool = False) -> dict[str, torch.Tensor]:
    """A module's parameters (with ``aliases``, every name of a tied parameter) or a state
    dict's tensors, by name."""
    if isinstance(obj, nn.Module):
        return dict(obj.named_parameters(remove_duplicate=not aliases))
    if isinstance(obj, Mapping):
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    raise TypeError(f"expected an nn.Module or a state dict, got {type(obj).__name__}")


# ----------------------------------------------------------------------------- names and identity
# Wrappers that rename a module's parameters without changing them: torch.compile's
# OptimizedModule, activation checkpointing and FSDP1 add a component anywhere in a name; DDP and
# DataParallel add a leading ``module.``.
_WRAPPERS_ANYWHERE = frozenset({"_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module"})
_WRAPPERS_LEADING = frozenset({"module"})


def canonical_name(name: str) -> str:
    """``name`` without the components wrappers add (``_orig_mod.`` anywhere, a leading
    ``module.``), so ``module._orig_mod.fc.weight`` and ``fc.weight`` name one parameter."""
    parts = [p for p in name.split(".") if p not in _WRAPPERS_ANYWHERE]
    i = 0
    while i < len(parts) - 1 and parts[i] in _WRAPPERS_LEADING:
        i += 1
    return ".".join(parts[i:])


@dataclass(frozen=True)
class Bound:
    """One model tensor a template constrains: its model ``name`` (the first of its names), the
    tensor, the stored sign tensor and every template entry that names it (several when the
    tensor is tied, e.g. an embedding shared with the output layer)."""

    name: str
    tensor: torch.Tensor
    sign: torch.Tensor
    entries: tuple[str, ...]


def bind(template: "Template", obj: nn.Module | Mapping[str, torch.Tensor]) -> list[Bound]:
    """Match every entry of ``template`` to a tensor of ``obj``, once per tensor, in template order.

    The one place where names are matched.  An entry matches the tensor of the same name, else
    the one whose :func:`canonical_name` is the entry's (a template of a plain model fits its
    ``torch.compile``'d or DDP-wrapped self, and the other way round).  Entries that name one
    tensor (a module's tied parameter, by identity) are constrained once and must give it the
    same signs.  Any entry that matches nothing, or matches a tensor of another shape, raises
    :class:`TemplateError`."""
    tensors = _named_tensors(obj, aliases=True)
    first: dict[int, str] = {}
    by_canonical: dict[str, set[int]] = {}
    for n, v in tensors.items():
        first.setdefault(id(v), n)
        by_canonical.setdefault(canonical_name(n), set()).add(id(v))
    by_id = {id(v): v for v in tensors.values()}
    found: dict[str, int] = {}
    missing = []
    for k in template:
        if k in tensors:
            found[k] = id(tensors[k])
            continue
        ids = by_canonical.get(canonical_name(k), ())
        if len(ids) == 1:
            (found[k],) = ids
        else:
            missing.append(k)
    if missing:
        names = list(_named_tensors(obj))
        near = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise TemplateError(
            f"template entries {missing[:5]}{' ...' if len(missing) > 5 else ''} match no "
            f"parameter of the model (its parameters: {near}); was the template made for "
            "another model? Use Template.adapt(model, rename=..., drop=...)"
        )
    signs = template.sign_tensors()
    out: dict[int, Bound] = {}
    for k, i in found.items():
        v, s = by_id[i], signs[k]
        if tuple(v.shape) != tuple(s.shape):
            alias = "" if first[i] == k else f" (model parameter {first[i]!r})"
            raise TemplateError(f"shape mismatch for {k!r}{alias}: template {tuple(s.shape)} vs "
                                f"model {tuple(v.shape)}")
        b = out.get(i)
        if b is None:
            out[i] = Bound(first[i], v, s, (k,))
            continue
        if not torch.equal(b.sign, s):
            n = int((b.sign != s).sum())
            raise TemplateError(
                f"template entries {b.entries[0]!r} and {k!r} name one tied parameter "
                f"({first[i]!r}) but give it different signs at {n} of {s.numel()} entries; a "
                "tied tensor has one sign pattern: drop one of the entries or make them agree"
            )
        out[i] = Bound(b.name, v, b.sign, b.entries + (k,))
    return list(out.values())


def violating(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Where ``w`` breaks the signs ``t``: ``w * t < 0``, or a NaN under a nonzero sign."""
    wrong = (w * t.to(w.dtype)) < 0
    if w.is_floating_point():
        wrong |= torch.isnan(w) & (t != 0)
    return wrong


def _dtensor_class():
    """torch's DTensor class when it has been imported (no DTensor can exist before)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A sharded tensor (DTensor) gathered whole (a collective: every rank must call it)."""
    dt = _dtensor_class()
    return t.full_tensor() if dt is not None and isinstance(t, dt) else t


def _selection(include: Patterns, exclude: Patterns, biases: bool) -> dict:
    """The selection rule as metadata (written into template files)."""
    inc, exc = _patterns(include), _patterns(exclude)
    return {"include": None if inc is None else list(inc),
            "exclude": None if exc is None else list(exc), "biases": bool(biases)}


def _recorded_selection(meta: Mapping) -> dict | None:
    """The selection rule a template recorded (``meta["selection"]``) as keyword arguments of
    :func:`select_names`, or None when it has none that is well formed."""
    rule = meta.get("selection")
    if not isinstance(rule, dict) or not isinstance(rule.get("biases"), bool):
        return None
    for key in ("include", "exclude"):
        v = rule.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(p, str) for p in v)):
            return None
    return {"include": rule.get("include"), "exclude": rule.get("exclude"),
            "biases": rule["biases"]}


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
    if t.is_floating_point():
        ok = not t.numel() or bool(((t == 1) | (t == -1) | (t == 0)).all())
    else:  # integers: in [-1, 1] is in {-1, 0, 1}, one pass
        ok = not t.numel() or (lambda mm: int(mm.min) >= -1 and int(mm.max) <= 1)(t.aminmax())
    if not ok:
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

    @classmethod
    def _trusted(cls, signs: dict[str, torch.Tensor], meta: dict) -> "Template":
        """Wrap contiguous int8 CPU tensors of +1 / -1 / 0 without checking them again: the
        file reader builds only such tensors, and transformations reuse checked ones."""
        t = cls.__new__(cls)
        t._signs, t._meta = signs, meta
        return t

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
        return cls(signs, {"source": "random", "seed": seed,
                           "selection": _selection(include, exclude, biases)})

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
        (0 = unconstrained by default, as in the reference).  NaN weights become 0 and, like
        infinite ones (which keep their sign), are named in a warning."""
        if zero not in (-1, 0, 1):
            raise TemplateError(f"zero must be -1, 0 or +1, got {zero!r}")
        tensors = _named_tensors(module_or_state_dict)
        signs, nonfinite = {}, []
        for name in select_names(tensors, include, exclude, biases):
            w = _full(tensors[name].detach()).to("cpu")
            s = torch.sign(w)  # in w's own dtype: a float64 1e-320 keeps its sign
            if zero:
                s[s == 0] = zero
            if w.is_floating_point() and not bool(torch.isfinite(w).all()):
                nan = torch.isnan(w)
                s[nan] = 0
                n_nan, n_inf = int(nan.sum()), int(torch.isinf(w).sum())
                nonfinite.append(f"{name!r} ({n_nan} NaN, {n_inf} infinite)")
            signs[name] = s.to(torch.int8)
        if nonfinite:
            warnings.warn(
                f"Template.from_module: non-finite weights in {', '.join(nonfinite)}; NaN entries "
                "are left unconstrained (0), infinite ones keep their sign",
                RuntimeWarning, stacklevel=2,
            )
        return cls(signs, {"source": source, "selection": _selection(include, exclude, biases)})

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
        return Template._trusted(keep, dict(self._meta))

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
        return Template._trusted(out, dict(self._meta))

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
        of ``module`` that the template's selection rule (as recorded in ``meta["selection"]``)
        would constrain but that have no entry (a new head) get ``missing``: ``"random"`` signs
        (seeded by ``seed``), ``"free"`` (left unconstrained) or ``"error"``.
        """
        if missing not in ("random", "free", "error"):
            raise TemplateError(f"missing must be 'random', 'free' or 'error', got {missing!r}")
        t = self.rename(rename) if rename is not None else self
        if drop:
            t = t.select(exclude=drop)
        params = dict(module.named_parameters())
        covered = {id(b.tensor) for b in bind(t, module)}
        rule = _recorded_selection(self._meta) or {
            "biases": any(v.dim() == 1 for v in t._signs.values())}  # saved without its rule
        uncovered = [n for n in select_names(params, **rule) if id(params[n]) not in covered]
        signs = dict(t._signs)
        if uncovered and missing == "error":
            raise TemplateError(f"template has no entry for model parameter(s) {uncovered}")
        if uncovered and missing == "random":
            signs.update(Template.random({n: params[n] for n in uncovered}, seed=seed,
                                         biases=rule["biases"])._signs)
        meta = dict(self._meta)
        meta["adapted"] = {"random" if missing == "random" else "free": uncovered}
        return Template._trusted(signs, meta)

    # ----------------------------------------------------------------- checks and measures
    def check(self, module: nn.Module | Mapping[str, torch.Tensor]) -> None:
        """Raise :class:`TemplateError` unless every entry names a parameter of the same shape
        (through a wrapper's prefix, or a tied parameter's other name: :func:`bind`)."""
        bind(self, module)

    def _weights(self, module) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(entry, detached weight, sign tensor on the weight's device) for every entry, after
        :func:`bind`; a sharded weight is gathered whole (a collective)."""
        for b in bind(self, module):
            w = _full(b.tensor.detach())
            t = b.sign.to(w.device)
            for k in b.entries:
                yield k, w, t

    @torch.no_grad()
    def violations(self, module: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Entries with ``W * T < 0`` per parameter, plus NaN weights under a nonzero entry
        (a NaN has no sign, so it cannot keep the template's; Freeze-SGD does not reset it)."""
        out = {k: int(violating(w, t).sum()) for k, w, t in self._weights(module)}
        return {k: out[k] for k in self._signs}

    @torch.no_grad()
    def agreement(self, module: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Fraction of constrained entries whose sign equals the template's, per parameter
        (zeros and NaNs do not agree; an infinite weight agrees when its sign does)."""
        out = {}
        for k, w, t in self._weights(module):
            mask = t != 0
            n = int(mask.sum())
            # compared in w's dtype: sign(NaN) is NaN, which equals nothing
            same = int(((torch.sign(w) == t.to(w.dtype)) & mask).sum())
            out[k] = same / n if n else float("nan")
        return {k: out[k] for k in self._signs}

    # ----------------------------------------------------------------- storage
    def save(self, path: str | os.PathLike) -> Path:
        """Write the template atomically to ``path``: a ``.safetensors`` path gets
        :meth:`to_safetensors`, any other the polarity format (:meth:`to_bytes`)."""
        path = Path(path)
        if path.is_dir():
            raise TemplateError(f"cannot write template file {path}: it is a directory")
        data = self.to_safetensors() if path.suffix == ".safetensors" else self.to_bytes()
        try:
            return atomic_write(path, data)
        except OSError as e:
            raise TemplateError(f"cannot write template file {path}: {e.strerror or e}") from None

    def to_bytes(self) -> bytes:
        """The template in the current file format (see the module docstring): one bit per
        constrained sign, the free entries as a mask or an index list, whichever is smaller,
        and a SHA-256 over every byte before it."""
        entries, chunks = [], []
        for name, t in self._signs.items():
            entry, parts = _encode_entry(name, t)
            entries.append(entry)
            chunks.extend(parts)
        payload = b"".join(chunks)
        header = {
            "format": FORMAT_VERSION,
            "library": "polarity",
            "version": _version(),
            "meta": _jsonable(self._meta),
            "entries": entries,
            "payload_bytes": len(payload),
        }
        hbytes = json.dumps(header, sort_keys=True).encode()
        body = MAGIC + struct.pack("<I", len(hbytes)) + hbytes + payload
        return body + hashlib.sha256(body).digest()

    def to_safetensors(self) -> bytes:
        """The template as a safetensors file (see "Safetensors interchange" in the module
        docstring): one ``U8`` tensor of packed signs per entry, the free entries as a packed
        mask or an index tensor when there are any, shapes and selection rule in the metadata."""
        from safetensors.numpy import save

        tensors, entries = {}, []
        for name, t in self._signs.items():
            entry, arrays = _encode_safetensors_entry(name, t)
            for key, a in arrays.items():
                if key in tensors or key in self._signs and key != name:
                    raise TemplateError(f"cannot write {name!r} to safetensors: its tensor key "
                                        f"{key!r} is taken by another entry")
                tensors[key] = a
            entries.append(entry)
        digest = hashlib.sha256()
        for a in tensors.values():  # entries order: each entry's signs, then its free entries
            digest.update(a.tobytes())
        metadata = {
            "format": ST_FORMAT,
            "polarity_format": str(ST_VERSION),
            "library_version": _version(),
            "entries": json.dumps(entries),
            "selection": json.dumps(_jsonable(self._meta.get("selection"))),
            "meta": json.dumps(_jsonable(self._meta)),
            "sha256": digest.hexdigest(),
        }
        return save(tensors, metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Template":
        """Read a template file of any format version this library has written, or a template
        in safetensors (:meth:`to_safetensors`); the content, not the suffix, tells which.  A
        missing, unreadable, truncated, corrupt or inconsistent file raises
        :class:`TemplateError`."""
        return read_file(path).template

    @classmethod
    def from_bytes(cls, data: bytes) -> "Template":
        """The inverse of :meth:`to_bytes` (also reads format 1), with :meth:`load`'s checks."""
        return _parse(bytes(data), "template data").template


# ----------------------------------------------------------------------------- file format

@dataclass(frozen=True)
class TemplateFile:
    """What :func:`read_file` found: the template and how the file stores it."""

    template: Template
    format: int | str  # 1, 2 or "safetensors"
    file_bytes: int
    payload_bytes: int
    encodings: dict[str, str]  # name -> how its free entries are stored: none | mask | list | index

    @property
    def bits_per_sign(self) -> float:
        return self.file_bytes * 8 / max(self.template.numel(), 1)

    @property
    def payload_bits_per_sign(self) -> float:
        return self.payload_bytes * 8 / max(self.template.numel(), 1)


def read_file(path: str | os.PathLike) -> TemplateFile:
    """Read and fully validate a template file (format 1 or 2, or safetensors) before building
    any tensor."""
    path = Path(path)
    where = f"template file {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TemplateError(f"template file not found: {path}") from None
    except IsADirectoryError:
        raise TemplateError(f"{where} is a directory, not a template file") from None
    except OSError as e:
        raise TemplateError(f"cannot read {where}: {e.strerror or e}") from None
    return _parse(data, where)


def _parse(data: bytes, where: str) -> TemplateFile:
    magic = data[: len(MAGIC)]
    if magic == MAGIC:
        return _read_format2(data, where)
    if magic == MAGIC_1:
        return _read_format1(data, where)
    if data[8:9] == b"{":  # a safetensors file: a little-endian u64 length, then a JSON header
        return _read_safetensors(data, where)
    if magic[:-1] == MAGIC[:-1]:
        raise TemplateError(f"{where} has format {magic[-1]}; this polarity reads formats 1 and "
                            f"{FORMAT_VERSION} (a newer polarity wrote it?)")
    raise TemplateError(f"{where} is not a polarity template (bad magic bytes)")


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


def _read_format2(data: bytes, where: str) -> TemplateFile:
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
    return TemplateFile(Template._trusted(signs, meta), 2, len(data), len(payload), encodings)


def _read_format1(data: bytes, where: str) -> TemplateFile:
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
    return TemplateFile(Template._trusted(signs, meta), 1, len(data), len(payload), encodings)


# ----------------------------------------------------------------------------- safetensors

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


def _read_safetensors(data: bytes, where: str) -> TemplateFile:
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
    if md.get("polarity_format") != str(ST_VERSION):
        raise TemplateError(f"{where} has polarity safetensors layout "
                            f"{_short(md.get('polarity_format'))}; this polarity reads "
                            f"{ST_VERSION}")
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
        expected[e["name"]] = ({"U8"}, [(n + 7) // 8])
        if kind != "none":
            k = _count(e, "free_count", what)
            if not 0 < k <= n:
                raise TemplateError(f"{what}: free_count {k} does not fit shape "
                                    f"{tuple(e['shape'])} ({n} entries)")
            expected[e["name"] + _FREE_SUFFIX] = (
                ({"U8"}, [(n + 7) // 8]) if kind == "mask" else ({"I32", "I64"}, [k]))
    if set(header) != set(expected):
        extra, absent = sorted(set(header) - set(expected)), sorted(set(expected) - set(header))
        raise TemplateError(f"{where}: its tensors do not match its entries (unexpected: "
                            f"{_short(extra)}, missing: {_short(absent)})")
    for key, (dtypes, shape) in expected.items():
        spec = header[key]
        if (not isinstance(spec, dict) or spec.get("dtype") not in dtypes
                or spec.get("shape") != shape):
            raise TemplateError(f"{where}: tensor {_short(key)} is {_short(spec)}; expected dtype "
                                f"{' or '.join(sorted(dtypes))} and shape {shape}")
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
    return TemplateFile(Template._trusted(signs, meta), "safetensors", len(data), payload,
                        encodings)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def iter_pairs(
    template: Template, module: nn.Module
) -> Iterable[tuple[str, nn.Parameter, torch.Tensor]]:
    """(model name, parameter, stored sign tensor) for every parameter ``template`` constrains,
    once per parameter (a tied one once), in template order (:func:`bind`)."""
    for b in bind(template, module):
        yield b.name, b.tensor, b.sign
