"""Your own network as ``package.module:factory``, a callable ``num_classes -> nn.Module``.

The string follows the usual ``module:attribute`` rule (entry points, uvicorn): the module is
imported (from ``sys.path``, then from the current directory, as ``python -m`` would look) and the
attribute, which may be dotted (``nets:Zoo.small``), must be callable.  :func:`build_factory`
calls it with the class count and checks what comes back: an ``nn.Module`` that maps a batch of
``3 x in_size x in_size`` images to one logit per class, with a head (the last ``nn.Linear``,
or the module names its own in ``polarity_head``, a tuple of module names; the head never takes
a source's signs).  Every problem is a :class:`ModelError` of one line naming the string.
Why a factory keeps its own initialisation: docs/models.md.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

import torch
from torch import nn

from ..cli_errors import did_you_mean
from .alexnet import head_names


class ModelError(ValueError):
    """A model string that does not name a usable network factory."""


def is_factory(arch: str) -> bool:
    """Whether ``arch`` names a factory (``package.module:factory``) rather than a built-in network."""
    return isinstance(arch, str) and ":" in arch


def _dotted(text: str) -> bool:
    return bool(text) and all(p.isidentifier() for p in text.split("."))


def _import(module: str, text: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise ModelError(f"importing module {module!r} of model {text!r} failed: "
                             f"ModuleNotFoundError: {e}") from None
        here = os.getcwd()
        if here in sys.path or "" in sys.path:
            raise ModelError(f"cannot import module {module!r} of model {text!r}: {e} (looked in "
                             "sys.path and the current directory)") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while it was imported
        raise ModelError(f"importing module {module!r} of model {text!r} failed: "
                         f"{type(e).__name__}: {e}") from None
    sys.path.append(here)  # as `python -m` would look; spawned workers inherit it
    importlib.invalidate_caches()
    return _import(module, text)


def load_factory(text: str) -> Callable[[int], nn.Module]:
    """The callable ``text`` (``package.module:factory``) names; a :class:`ModelError` says why not."""
    module, sep, attr = str(text).partition(":")
    if not sep or not _dotted(module) or not _dotted(attr):
        raise ModelError(f"model {text!r} is not package.module:factory (a module path, ':', "
                         "the name of a callable num_classes -> nn.Module)")
    obj = _import(module, text)
    for part in attr.split("."):
        if not hasattr(obj, part):
            close = did_you_mean(part, [n for n in dir(obj) if not n.startswith("_")])
            guess = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ModelError(f"module {module!r} has no attribute {attr!r} (model {text!r}){guess}")
        obj = getattr(obj, part)
    if not callable(obj):
        kind = type(obj).__name__
        raise ModelError(f"model {text!r} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not a "
                         "callable num_classes -> nn.Module")
    return obj


def build_factory(text: str, num_classes: int, in_size: int | None = None) -> nn.Module:
    """``factory(num_classes)`` for the factory ``text``, checked: an ``nn.Module`` with a head
    and, when ``in_size`` is given, ``(2, num_classes)`` logits for a batch of two
    ``3 x in_size x in_size`` images (:func:`check_output`)."""
    factory = load_factory(text)
    try:
        model = factory(num_classes)
    except Exception as e:  # noqa: BLE001 - the user's factory failed
        raise ModelError(f"model {text!r} failed for num_classes={num_classes}: "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {text!r} returned a {type(model).__name__} for "
                         f"num_classes={num_classes}, not an nn.Module")
    try:
        head_names(model)
    except ValueError as e:
        raise ModelError(f"model {text!r}: {e}; give the module a 'polarity_head' attribute "
                         "naming its head's modules, e.g. ('classifier',)") from None
    if in_size is not None:
        check_output(model, text, num_classes, in_size)
    return model


@torch.no_grad()
def check_output(model: nn.Module, text: str, num_classes: int, in_size: int) -> None:
    """Run two ``3 x in_size x in_size`` images of zeros through ``model`` (in eval mode, on its
    device) and check that one logit per class comes out."""
    was_training = model.training
    p = next(iter(model.parameters()), None)
    x = torch.zeros(2, 3, int(in_size), int(in_size), device=p.device if p is not None else "cpu")
    model.eval()
    try:
        out = model(x)
    except Exception as e:  # noqa: BLE001 - the user's forward failed
        raise ModelError(f"model {text!r} cannot take a batch of 3x{in_size}x{in_size} images: "
                         f"{type(e).__name__}: {e}") from None
    finally:
        model.train(was_training)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (2, num_classes):
        raise ModelError(f"model {text!r} returns {got} for a batch of 2 images; the protocol "
                         f"needs (2, {num_classes}), one logit per class (num_classes={num_classes})")


__all__ = ["ModelError", "is_factory", "load_factory", "build_factory", "check_output"]
