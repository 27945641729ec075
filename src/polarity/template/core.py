"""The :class:`Template`: an immutable mapping ``parameter name -> int8 sign tensor`` (+1 / -1,
0 = free), built from a model or at random, adapted, checked and measured against a model, saved
and loaded (:func:`read_file`); see docs/templates.md."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..files import atomic_write
from .binding import _full, bind, violating
from .errors import TemplateError
from .fileformat import FORMAT_VERSION, MAGIC, MAGIC_1, _encode_entry, _read_format1, _read_format2
from .safetensors_io import ST_FORMAT, ST_VERSION, _encode_safetensors_entry, _read_safetensors
from .select import (Patterns, _kept, _named_tensors, _recorded_selection, _selection,
                     select_names)


def _version() -> str:
    from .._version import __version__

    return __version__


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


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
        keep = {k: v for k, v in self._signs.items() if _kept(k, include, exclude)}
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

    def agreement(self, other: nn.Module | Mapping[str, torch.Tensor] | Template
                  ) -> dict[str, float]:
        """Fraction of compared entries whose sign equals the template's, per parameter (NaN
        where nothing is compared).  Against a module or state dict: every constrained entry is
        compared (zeros and NaNs do not agree; an infinite weight agrees when its sign does).
        Against another :class:`Template` (same names and shapes, else a :class:`TemplateError`
        naming the mismatches): the entries constrained in both.  Counts and an overall figure:
        :func:`polarity.template.diagnostics.diagnose`."""
        return {k: same / n if n else float("nan")
                for k, (same, n) in self._agreement_counts(other).items()}

    @torch.no_grad()
    def _agreement_counts(self, other) -> dict[str, tuple[int, int]]:
        """``name -> (entries with equal sign, entries compared)``: the one implementation of
        :meth:`agreement`, for a module's weights and for another template."""
        if isinstance(other, Template):
            _check_same_entries(self, other)
            pairs = ((k, t, other._signs[k], other._signs[k] != 0) for k, t in self._signs.items())
        else:  # compared in w's dtype: sign(NaN) is NaN, which equals nothing
            pairs = ((k, t, torch.sign(w), None) for k, w, t in self._weights(other))
        out = {}
        for k, t, s, joint in pairs:
            mask = t != 0 if joint is None else (t != 0) & joint
            out[k] = int(((s == t.to(s.dtype)) & mask).sum()), int(mask.sum())
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
        """The template in the current file format (see docs/templates.md): one bit per
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
        """The template as a safetensors file (see "Safetensors interchange" in
        docs/templates.md): one ``U8`` tensor of packed signs per entry, the free entries as a
        packed mask or an index tensor when there are any, shapes and selection rule in the
        metadata."""
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


def _check_same_entries(a: Template, b: Template) -> None:
    """Raise :class:`TemplateError` unless ``a`` and ``b`` have the same names and shapes."""
    def listed(items: list[str], most: int = 5) -> str:
        more = f" and {len(items) - most} more" if len(items) > most else ""
        return ", ".join(items[:most]) + more

    sa, sb = a.shapes(), b.shapes()
    problems = []
    if only := [k for k in sa if k not in sb]:
        problems.append(f"only in the first: {listed(only)}")
    if only := [k for k in sb if k not in sa]:
        problems.append(f"only in the second: {listed(only)}")
    if shapes := [f"{k} {sa[k]} vs {sb[k]}" for k in sa if k in sb and sa[k] != sb[k]]:
        problems.append(f"different shapes: {listed(shapes)}")
    if problems:
        raise TemplateError(f"the templates do not match ({'; '.join(problems)})")


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
        read = _read_format2
    elif magic == MAGIC_1:
        read = _read_format1
    elif data[8:9] == b"{":  # a safetensors file: a little-endian u64 length, then a JSON header
        read = _read_safetensors
    elif magic[:-1] == MAGIC[:-1]:
        raise TemplateError(f"{where} has format {magic[-1]}; this polarity reads formats 1 and "
                            f"{FORMAT_VERSION} (a newer polarity wrote it?)")
    else:
        raise TemplateError(f"{where} is not a polarity template (bad magic bytes)")
    signs, meta, *stored = read(data, where)
    return TemplateFile(Template._trusted(signs, meta), *stored)
