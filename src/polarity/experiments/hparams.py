"""Hyper-parameters that describe themselves (OpenLTH's habit): ``hparam(default, help, limit)``
keeps a field's help text and range beside it, in the field's metadata, and ``CommonHparams``
holds the fields every experiment shares, one name per idea.  An experiment's Hparams subclasses
it (``FrozenHparams`` adds the Freeze-SGD reset) and gives a shared field its own default by
redeclaring it (``trials: int = 50``); the help and range stay the base's (``field_meta``).
``polarity run --help``, validation (``check_hparams``), ``polarity show`` and the config files
``polarity show --toml`` writes all read them from here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

@dataclass(frozen=True)
class Range:
    """The values a number (or each item of a tuple of numbers) may take: ``lo <= v <= hi``,
    either end open with ``open_lo`` / ``open_hi``.  The upper bounds are sanity bounds far above
    any sensible use: they turn a typo (``epochs=1000000000``) into an error, not a run that
    allocates until it fails."""

    lo: float
    hi: float
    open_lo: bool = False
    open_hi: bool = False

    def __contains__(self, v: float) -> bool:
        return ((self.lo < v if self.open_lo else self.lo <= v)
                and (v < self.hi if self.open_hi else v <= self.hi))

    def __str__(self) -> str:  # ">= 1 and <= 10000"
        def fmt(x: float) -> str:
            return str(x) if isinstance(x, int) else f"{x:g}"

        return (f"{'>' if self.open_lo else '>='} {fmt(self.lo)} and "
                f"{'<' if self.open_hi else '<='} {fmt(self.hi)}")


def positive(hi: float) -> Range:
    """``(0, hi]``."""
    return Range(0, hi, open_lo=True)


def hparam(default: Any = dataclasses.MISSING, help: str = "", *, limit: Range | None = None) -> Any:
    """A dataclass field with its ``help`` and ``limit`` (the range ``check_hparams`` enforces)."""
    meta: dict[str, Any] = {}
    if help:
        meta["help"] = help
    if limit is not None:
        meta["limit"] = limit
    return dataclasses.field(default=default, metadata=meta)


def field_meta(cls: type, name: str, key: str) -> Any:
    """``key`` of field ``name``'s metadata, from the most derived class of ``cls``'s MRO that gives
    it (a subclass that only changes a default keeps its base's help and range); None if none."""
    for c in cls.__mro__:
        f = c.__dict__.get("__dataclass_fields__", {}).get(name)
        if f is not None and key in f.metadata:
            return f.metadata[key]
    return None


@dataclass(frozen=True)
class CommonHparams:
    """The fields every experiment has: its grid (conditions, sample sizes, trials), its seed and
    threads, and the training schedule and validation size of each trial."""

    conditions: tuple[str, ...] = hparam((), "the conditions compared (polarity show EXP lists them)")
    sample_sizes: tuple[int, ...] = hparam((100,), "training-set sizes n (a grid axis)",
                                           limit=Range(1, 10_000_000))
    trials: int = hparam(1, "independent trials (seeds) per grid cell", limit=Range(1, 100_000))
    seed: int = hparam(0, "root seed; trial t uses trial_seed(seed, t), shared by its conditions",
                       limit=Range(0, 2**63 - 1))  # non-negative 64-bit integers (SQLite, numpy)
    threads: int = hparam(1, "torch threads per job (the engine sets them)", limit=Range(1, 1024))
    epochs: int = hparam(1, "passes over each trial's training set", limit=Range(1, 1_000_000))
    lr: float = hparam(1e-3, "learning rate", limit=positive(1e3))
    batch_size: int = hparam(32, "mini-batch size", limit=Range(1, 1_000_000))
    val_size: int | None = hparam(1000, "validation examples of each trial", limit=Range(1, 10_000_000))


@dataclass(frozen=True)
class FrozenHparams(CommonHparams):
    """The common fields and the Freeze-SGD reset of the frozen conditions."""

    reset: str = hparam("posRand", "Freeze-SGD reset of the frozen conditions without '@method' "
                                   "(posCon | posRand | zero | flip; polarity.freeze.methods)")


__all__ = ["hparam", "field_meta", "CommonHparams", "FrozenHparams"]
