"""Control templates: a template's signs with their structure or their imbalance taken out.

* :func:`shuffle_signs` permutes each selected tensor's constrained entries among themselves:
  every tensor keeps its counts of +1 and -1 (its sign fraction) and its free entries (0) stay
  where they are, but which weight gets which sign is random.  What a transferred template does
  beyond that is due to its structure.
* :func:`balance_signs` flips, in each selected tensor, the fewest entries of the majority sign
  that bring its +1 and -1 counts level: ``|pos - neg| // 2`` of them (one sign stays ahead by
  one when the count of constrained entries is odd), chosen uniformly at random among the
  majority sign.  Everything else keeps its sign, so the structure is kept and the imbalance goes.

Both are deterministic for a seed: each tensor draws from its own generator, seeded from
``(seed, tensor name)``, so a tensor's result does not depend on which other tensors are in the
template or selected.  Tensors not selected (``names``; e.g. a head that keeps its own signs) are
returned unchanged.  The image protocol's ``frozen-shuffled`` and ``frozen-balanced`` arms are
built from them (docs/images.md).
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import torch

from .core import Template
from .errors import TemplateError


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{int(seed)}\0{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _selected(template: Template, names: Iterable[str] | None) -> list[str]:
    if names is None:
        return list(template.keys())
    names = list(names)
    unknown = [k for k in names if k not in template]
    if unknown:
        raise TemplateError(f"the template has no entry {unknown[0]!r} to transform "
                            f"(it has {len(template)} entries)")
    return names


def _derived(template: Template, signs: dict[str, torch.Tensor], kind: str, seed: int,
             names: list[str]) -> Template:
    meta = template.meta
    meta["control"] = {"kind": kind, "seed": int(seed), "tensors": sorted(names)}
    return Template(signs, meta)


def shuffle_signs(template: Template, seed: int, names: Iterable[str] | None = None) -> Template:
    """``template`` with each selected tensor's nonzero entries randomly permuted among the
    nonzero positions (same per-tensor sign counts, free entries in place, no structure)."""
    chosen = _selected(template, names)
    signs = template.sign_tensors()
    for k in chosen:
        flat = signs[k].flatten()
        on = (flat != 0).nonzero().squeeze(1)
        new = flat.clone()
        new[on] = flat[on][torch.randperm(on.numel(), generator=_generator(seed, k))]
        signs[k] = new.view(signs[k].shape)
    return _derived(template, signs, "shuffled", seed, chosen)


def balance_signs(template: Template, seed: int, names: Iterable[str] | None = None) -> Template:
    """``template`` with each selected tensor's sign counts levelled by the fewest flips:
    ``|pos - neg| // 2`` entries of the majority sign, drawn uniformly, become the minority sign."""
    chosen = _selected(template, names)
    signs = template.sign_tensors()
    for k in chosen:
        flat = signs[k].flatten()
        pos, neg = int((flat == 1).sum()), int((flat == -1).sum())
        flips = abs(pos - neg) // 2
        if flips == 0:
            continue
        major = 1 if pos > neg else -1
        idx = (flat == major).nonzero().squeeze(1)
        pick = idx[torch.randperm(idx.numel(), generator=_generator(seed, k))[:flips]]
        new = flat.clone()
        new[pick] = -major
        signs[k] = new.view(signs[k].shape)
    return _derived(template, signs, "balanced", seed, chosen)


__all__ = ["shuffle_signs", "balance_signs"]
