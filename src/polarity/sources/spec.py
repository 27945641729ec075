"""One parsed source value: what a transfer source string names, parsed once and handed down.

A source string is one of

* ``imagenet``: torchvision's AlexNet ``IMAGENET1K_V1`` weights (needs ``arch="alexnet"``);
* ``imagenet:/path/to/checkpoint.pth``: the same architecture from a local file;
* the name of a shipped source (``polarity source list``) or the path of a source directory;
* ``pretrained:<dataset>[,field=value...]``: a source trained here by the source recipe
  (:class:`polarity.sources.recipe.SourceRecipe`, the same trainer as ``polarity source train``)
  on ``<dataset>`` (``fmnist``, ``cifar10`` or a class subset such as ``cifar10:animals``), with
  the target's architecture; ``field=value`` pairs override recipe fields (``epochs=2,seed=5``,
  ``train_n=5000``, ``optimizer=sgd``, ...), and the result is cached as a source directory
  under ``polarity.files.cache_root()/sources/<hash>/``;
* ``none``: no source.

:func:`parse_source` turns the string into a :class:`SourceSpec` (or raises
:class:`TransferError` saying what is wrong); everything downstream takes that value.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .recipe import SourceRecipe
from .zoo import as_path, resolve, shipped
from .directory import SourceError

DATASET_NAMES = {"fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
# recipe fields a pretrained: string may not set: the architecture is the target's, the dataset
# is the string's own
FIXED_FIELDS = ("dataset", "arch", "width", "in_size")
OVERRIDABLE = tuple(f.name for f in dataclasses.fields(SourceRecipe) if f.name not in FIXED_FIELDS)
SOURCE_FORMAT = ("'imagenet', 'imagenet:/path/to/checkpoint.pth', a shipped source name "
                 "('polarity source list'), a source directory, 'pretrained:<dataset>[,field=value...]' "
                 f"(datasets: {', '.join(DATASET_NAMES)} or a class subset such as cifar10:animals; "
                 "fields: any of the source recipe's, e.g. epochs=2,seed=5) or 'none'")


class TransferError(ValueError):
    """A bad or unusable transfer source."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source string (:func:`parse_source`)."""

    kind: str  # "imagenet" | "directory" | "pretrained" | "none"
    text: str
    path: str | None = None  # imagenet:<path>, or the source directory
    dataset: str | None = None  # pretrained:<dataset>
    overrides: tuple[tuple[str, Any], ...] = ()  # pretrained:<dataset>,field=value,...

    @property
    def label(self) -> str:
        """Short name used in figure labels: 'IN' for ImageNet, else the dataset's name."""
        if self.kind == "imagenet":
            return "IN"
        if self.kind == "pretrained":
            base, _, sub = self.dataset.partition(":")
            name = DATASET_NAMES.get(base, base)
            return f"{name} [{sub}]" if sub else name
        if self.kind == "directory":
            return as_path(self.text).name
        return "none"

    def recipe(self, arch: str, model_kwargs: Mapping[str, Any],
               defaults: Mapping[str, Any] | None = None) -> SourceRecipe:
        """The recipe of a ``pretrained:`` source for a target of architecture ``arch`` (and
        ``model_kwargs``: ``width``, ``in_size``): the recipe's defaults, then ``defaults`` (a
        caller's, e.g. an experiment's ``pretrain_n``/``pretrain_epochs``), then the string's own
        ``field=value`` pairs, which win."""
        if self.kind != "pretrained":
            raise TransferError(f"source {self.text!r} is not a pretrained: source")
        arch_fields = {k: model_kwargs[k] for k in ("width", "in_size") if k in model_kwargs}
        fields = {**dict(defaults or {}), **dict(self.overrides)}
        bad = sorted(set(fields) - set(OVERRIDABLE))
        if bad:
            raise TransferError(f"source {self.text!r}: {', '.join(bad)} cannot be set for a "
                                f"pretrained source (settable: {', '.join(OVERRIDABLE)})")
        r = SourceRecipe(dataset=self.dataset, arch=arch, **arch_fields, **fields)
        try:
            r.validate()
        except ValueError as e:
            raise TransferError(f"source {self.text!r}: {e}") from None
        return r


def _convert(text: str, field: str, value: str) -> Any:
    default = getattr(SourceRecipe(dataset=""), field)
    kind = type(default) if default is not None else str
    try:
        if kind is bool:
            low = value.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return low in ("true", "1", "yes")
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
    except ValueError:
        raise TransferError(f"transfer source {text!r}: {field}={value!r} is not "
                            f"{'a boolean' if kind is bool else 'an integer' if kind is int else 'a number'}") from None
    return value


def _parse_pretrained(text: str, rest: str) -> SourceSpec:
    from ..data.subsets import SubsetError, split_name, subset_classes

    head, *pairs = [p.strip() for p in rest.split(",")]
    ds = head.lower()
    base, sub = split_name(ds)
    if base not in DATASET_NAMES:
        raise TransferError(f"transfer source {text!r}: unknown source dataset {head!r}; "
                            f"known: {', '.join(DATASET_NAMES)} (or a class subset, e.g. cifar10:animals)")
    if sub is not None:
        try:
            subset_classes(base, sub)
        except SubsetError as e:
            raise TransferError(f"transfer source {text!r}: {e}") from None
    overrides: dict[str, Any] = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        field, value = field.strip(), value.strip()
        if not sep or not field or not value:
            raise TransferError(f"transfer source {text!r}: {pair!r} is not field=value")
        if field not in OVERRIDABLE:
            raise TransferError(f"transfer source {text!r}: unknown or fixed recipe field {field!r} "
                                f"(settable: {', '.join(OVERRIDABLE)})")
        if field in overrides:
            raise TransferError(f"transfer source {text!r}: {field} is given twice")
        overrides[field] = _convert(text, field, value)
    spec = SourceSpec("pretrained", text.strip(), dataset=ds,
                      overrides=tuple(sorted(overrides.items())))
    spec.recipe("compact", {})  # range checks now, not after a run directory exists
    return spec


def parse_source(text: str) -> SourceSpec:
    """Parse a source string; raise :class:`TransferError` saying what is wrong."""
    if isinstance(text, SourceSpec):
        return text
    if not isinstance(text, str):
        raise TransferError(f"transfer source must be a string, got {type(text).__name__}")
    s = text.strip()
    if s.lower() in ("", "none"):
        return SourceSpec("none", s)
    if s.lower() == "imagenet":
        return SourceSpec("imagenet", s)
    kind, sep, rest = s.partition(":")
    if sep and kind.lower() == "imagenet":
        if not rest:
            raise TransferError(f"transfer source {text!r}: missing checkpoint path after 'imagenet:'")
        return SourceSpec("imagenet", s, path=rest)
    if sep and kind.lower() == "pretrained":
        return _parse_pretrained(text, rest)
    try:
        return SourceSpec("directory", s, path=str(resolve(s)))
    except SourceError as e:
        if s in shipped() or as_path(s).exists():
            raise TransferError(f"transfer source {text!r}: {e}") from None
    from ..cli_errors import did_you_mean

    close = did_you_mean(s, [*shipped(), "imagenet", "none"])
    guess = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise TransferError(f"unknown transfer source {text!r}; {guess}expected {SOURCE_FORMAT}")


def same_dataset(source: str, target: str) -> bool:
    """Whether a source trained on ``source`` has seen ``target``'s training images: the same
    dataset, or a whole dataset and one of its class subsets (``cifar10`` and
    ``cifar10:vehicles``).  Disjoint class subsets of one dataset (``cifar10:animals`` and
    ``cifar10:vehicles``, the positive control) are different datasets."""
    from ..data.subsets import split_name

    a, b = str(source).strip().lower(), str(target).strip().lower()
    if a == b:
        return True
    (ba, sa), (bb, sb) = split_name(a), split_name(b)
    return ba == bb and (sa is None or sb is None)


__all__ = ["SourceSpec", "TransferError", "parse_source", "same_dataset", "DATASET_NAMES",
           "SOURCE_FORMAT", "OVERRIDABLE"]
