"""Which parameters a template constrains.

By default the weights of linear and convolutional layers: every floating parameter with
``dim >= 2``.  ``biases=True`` adds the 1-d parameters whose name ends in ``bias``.  ``include``
and ``exclude`` are glob patterns (``fnmatch``) on parameter names that filter that set, e.g.
``include=["features.*"]`` or ``exclude=["classifier.6.*"]``.  A pattern matches a name as it is
or without the components wrappers add (:func:`canonical_name`: ``_orig_mod.`` of torch.compile, a
leading ``module.`` of DDP), so ``"fc.*"`` selects ``_orig_mod.fc.weight`` too.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Sequence

import torch
from torch import nn

Patterns = str | Sequence[str] | None

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


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a pattern matches ``name`` as it is or its :func:`canonical_name`."""
    plain = canonical_name(name)
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(plain, p) for p in patterns)


def _kept(name: str, include: Patterns, exclude: Patterns) -> bool:
    """The include/exclude rule for one name: one of ``include`` matches it (or there is none)
    and none of ``exclude`` does."""
    inc, exc = _patterns(include), _patterns(exclude)
    return (inc is None or _matches(name, inc)) and not (exc is not None and _matches(name, exc))


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
    out = []
    for name, t in tensors.items():
        if not t.is_floating_point():
            continue
        if not (t.dim() >= 2 or (biases and t.dim() == 1 and name.endswith("bias"))):
            continue
        if _kept(name, include, exclude):
            out.append(name)
    return out
