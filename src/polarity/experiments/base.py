"""The contract between an experiment and the engine.

An experiment is a typed hyper-parameter dataclass plus four functions:

* ``trials(hp)``: every trial of the grid, keyed by (condition, n, width, trial);
* ``jobs(hp)``: the same trials grouped into units of work.  The grouping must be a pure,
  deterministic function of ``hp`` (never of what is already done), so that a resumed run
  recomputes exactly the jobs that were lost and gets identical numbers;
* ``run_job(hp, job, device)``: computes every trial of one job and returns their results.
  It must be deterministic given (hp, job): seeds come from ``trial_seed(hp.seed, trial)``.  A
  trial's numbers depend on its key and on the fields outside ``grid_names`` only (not on the
  other trials of its job, nor on the size of the grid), so that a grown run computes only its
  new trials, in jobs cut down to them;
* ``report(hp, epochs, trials, outdir)``: figures/tables for a finished (or partial) run,
  computed only from the store's tidy frames; returns a Markdown section.

Optionally, ``prepare(hp, device, log)``: work every job shares (pretraining a transfer source),
run once by the engine's driver before any job is dispatched.

The engine (``polarity.engine``) owns expansion, storage, resume, executors and progress;
an experiment never touches the database.

``Experiment.validate`` checks what holds for every experiment before anything is computed or
written (``check_hparams``): each field has its declared type, floats are finite, tuple fields
(the grid axes) list no value twice, numbers lie in their ``Range`` (the Hparams class's own
``limits``, else the field's ``hparam(limit=...)``, else ``COMMON_LIMITS``), and the grid
holds at most ``MAX_GRID_TRIALS`` trials, counted before it is built.  An experiment adds its
own rules (conditions, couplings between fields) after ``super().validate(hp)``.
"""
from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import gc
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from ..seeds import trial_seed  # noqa: F401  (re-exported: the experiments' seed)
from .hparams import CommonHparams, Range, field_meta, positive  # noqa: F401  (Range, positive: re-exported)


@dataclass(frozen=True, order=True)
class TrialKey:
    """One trial of a grid.  ``width`` is 0 where an experiment has no width axis."""

    condition: str
    n: int
    width: int
    trial: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Job:
    """A unit of work: trials computed together (e.g. batched into one tensor program)."""

    key: str
    trials: tuple[TrialKey, ...]


@dataclass
class EpochRecord:
    epoch: int  # 1-based: the state after ``epoch`` passes over the training set
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    extra: dict[str, float] = field(default_factory=dict)  # e.g. {"switch/fc1.weight": 0.01}


_SERIES = tuple(f.name for f in dataclasses.fields(EpochRecord) if f.name != "extra")  # epoch, train_loss, ...


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: equal when the same object
class EpochColumns(Sequence):
    """One trial's per-epoch records as 1-D arrays (numpy or anything with ``len``, indexing and
    ``tolist``), for an experiment that computes every epoch of many trials at once: the store
    encodes them without an object per epoch (``store.pack_trial``).  Read one by one, they are
    the ``EpochRecord``s they stand for (``extra``: key -> per-epoch values)."""

    epoch: Any
    train_loss: Any
    train_acc: Any
    val_loss: Any
    val_acc: Any
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.epoch)
        bad = [k for k in _SERIES if len(getattr(self, k)) != n]
        bad += [f"extra {k!r}" for k, v in self.extra.items() if len(v) != n]
        if bad:
            raise ExperimentError(f"EpochColumns: {', '.join(bad)} not {n} epochs long like epoch")

    def __len__(self) -> int:
        return len(self.epoch)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return EpochRecord(*(_item(getattr(self, k)[i]) for k in _SERIES),
                           {k: _item(v[i]) for k, v in self.extra.items()})

    def __iter__(self):
        keys = list(self.extra)
        cols = [getattr(self, k).tolist() for k in _SERIES]
        for e, a, b, c, d, *x in zip(*cols, *(self.extra[k].tolist() for k in keys)):
            yield EpochRecord(e, a, b, c, d, dict(zip(keys, x)))


def _item(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x  # numpy / torch scalars as Python's, as tolist gives


def epoch_values(epochs: Sequence[EpochRecord], name: str) -> list:
    """One field (``val_acc``, ...) of every epoch of a trial, read from the column where the
    epochs are ``EpochColumns`` (no record built)."""
    if isinstance(epochs, EpochColumns):
        return getattr(epochs, name).tolist()
    return [getattr(e, name) for e in epochs]


@dataclass
class TrialResult:
    key: TrialKey
    seed: int
    wall_s: float
    epochs: Sequence[EpochRecord]  # a list, or EpochColumns
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable trial-level data


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while building many small acyclic objects (the
    per-epoch records of thousands of networks): otherwise its repeated passes over the growing
    lists cost more than building them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def hparams_dict(hp: Any) -> dict[str, Any]:
    d = dataclasses.asdict(hp)
    return json.loads(json.dumps(d, default=list))


class ExperimentError(ValueError):
    """A bad request to an experiment (unknown condition, impossible grid, ...)."""


# ----------------------------------------------------------------------------- hyper-parameters

MAX_GRID_TRIALS = 1_000_000  # trials in one run directory (the paper's largest grid has 52,800)
# the ranges of the common fields (``CommonHparams``' metadata), by name: they hold for a field of
# that name in any Hparams class, derived from ``CommonHparams`` or not
COMMON_LIMITS: Mapping[str, Range] = {f.name: f.metadata["limit"] for f in dataclasses.fields(CommonHparams)
                                      if "limit" in f.metadata}
_INT64 = Range(-(2**63), 2**63 - 1)


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (handles ``from __future__ import annotations``)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolvable annotations: fall back to the raw ones
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}


def optional_inner(tp: Any) -> tuple[bool, Any]:
    """``(True, X)`` for ``Optional[X]`` / ``X | None``, else ``(False, tp)``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _tuple_item(tp: Any) -> Any | None:
    """The item type of ``tuple[X, ...]`` (``Any`` for a bare tuple); ``None`` if not a tuple."""
    if tp is tuple or typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        return args[0] if args else Any
    return None


def _int_axes(cls: type) -> list[str]:
    """The integer-tuple fields of a Hparams class: the grid axes (sample sizes, widths)."""
    return [name for name, tp in field_types(cls).items() if _tuple_item(optional_inner(tp)[1]) is int]


def _type_problem(tp: Any, v: Any) -> str | None:
    """What is wrong with ``v`` as a value of the scalar type ``tp`` (None if nothing)."""
    if tp is bool:
        return None if isinstance(v, bool) else "a boolean"
    if tp is int:
        if not isinstance(v, int) or isinstance(v, bool):
            return "an integer"
        return None if v in _INT64 else "a 64-bit integer"
    if tp is float:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return "a number"
        return None if math.isfinite(v) else "a finite number"
    if tp is str:
        return None if isinstance(v, str) else "a string"
    return None  # Any and other types: the experiment's own validate checks them


def check_hparams(exp_name: str, hp: Any) -> None:
    """The checks every experiment shares (see the module docstring); raises ``ExperimentError``
    naming the field, the value and what it must be."""
    own = dict(getattr(type(hp), "limits", {}))
    limits = {name: own.get(name) or field_meta(type(hp), name, "limit") or COMMON_LIMITS.get(name)
              for name in field_types(type(hp))}
    limits = {k: v for k, v in limits.items() if v is not None}
    for name, tp in field_types(type(hp)).items():
        v = getattr(hp, name)
        optional, tp = optional_inner(tp)
        if v is None:
            if not optional:
                raise ExperimentError(f"{exp_name}: {name} must be set, got none")
            continue
        item = _tuple_item(tp)
        values = v if item is not None else (v,)
        if item is not None and not isinstance(v, (tuple, list)):
            raise ExperimentError(f"{exp_name}: {name} must be a tuple, got {v!r}")
        for x in values:
            what = _type_problem(item if item is not None else tp, x)
            if what:
                got = f"{x!r} in {name}" if item is not None else repr(x)
                raise ExperimentError(f"{exp_name}: {name} must be {what}"
                                      f"{' per item' if item is not None else ''}, got {got}")
            if name in limits and x not in limits[name]:
                raise ExperimentError(f"{exp_name}: {name} must be {limits[name]}, got {x!r}")
        if item is not None:
            dup = sorted({x for x, k in collections.Counter(v).items() if k > 1}, key=repr)
            if dup:
                what = "condition(s)" if name == "conditions" else "value(s)"
                raise ExperimentError(f"{exp_name}: duplicate {what} {dup} in {name}; list each once")


class Experiment(abc.ABC):
    """Subclass, set the class attributes, implement the four methods, and ``@register`` it."""

    name: ClassVar[str]
    description: ClassVar[str]
    Hparams: ClassVar[type]  # a frozen dataclass, best a subclass of hparams.CommonHparams
    presets: ClassVar[Mapping[str, Any]]  # preset name -> Hparams instance
    conditions: ClassVar[Sequence[str]]  # every condition this experiment knows
    # hparams fields exposed as their own flags on `polarity run NAME` (e.g. {"source": "..."})
    cli_fields: ClassVar[Mapping[str, str]] = {}
    # old name -> new name of the fields renamed since spec format 1 (``engine.spec.SPEC_FORMAT``):
    # a run directory made before is read under the new names
    renamed: ClassVar[Mapping[str, str]] = {}
    # the fields that only list the grid's trials, along which a run grows (``grid_names``)
    grid_fields: ClassVar[Sequence[str] | None] = None

    def grid_names(self, hp_cls: type | None = None) -> tuple[str, ...]:
        """The hparams fields that only list the grid's trials: a trial's numbers depend on its
        key and on the other fields, never on these beyond its key, so a run with more trials,
        sample sizes or conditions is the same run grown (docs/engine.md, "Growing a run").
        ``grid_fields``, else ``conditions``, ``trials`` and the integer-tuple fields (the axes
        ``grid_size`` multiplies)."""
        if self.grid_fields is not None:
            return tuple(self.grid_fields)
        return ("conditions", "trials", *_int_axes(hp_cls or self.Hparams))

    def validate(self, hp: Any) -> None:
        """The shared checks (``check_hparams``), known conditions, and a grid of at most
        ``MAX_GRID_TRIALS`` trials.  Subclasses call it first, then check their own rules."""
        check_hparams(self.name, hp)
        unknown = [c for c in hp.conditions if not self.is_condition(c)]
        if unknown:
            raise ExperimentError(
                f"unknown condition(s) {unknown} for experiment {self.name!r}; "
                f"known: {', '.join(self.conditions)}"
            )
        size = self.grid_size(hp)
        if size > MAX_GRID_TRIALS:
            raise ExperimentError(
                f"{self.name}: the grid has {size:,} trials, more than the {MAX_GRID_TRIALS:,} one run "
                "takes; split it into several runs (fewer trials, conditions or grid values each)")

    def grid_size(self, hp: Any) -> int:
        """The number of trials of ``hp``'s grid, counted without building it: conditions x
        trials x the length of every integer-tuple field (the grid axes: sample sizes, widths).
        Override when a grid is not such a product."""
        size = len(hp.conditions) * int(hp.trials)
        for name in _int_axes(type(hp)):
            if getattr(hp, name) is not None:
                size *= len(getattr(hp, name))
        return size

    def fit_to_data(self, hp: Any, given: frozenset[str]) -> Any:
        """``hp`` with the fields the user did not give (``given``: those a config file, ``--set``
        or a flag named) fitted to what only the data can say, e.g. sample sizes within a user's
        image folder; ``engine.resolve`` calls it before ``validate``.  Default: ``hp``."""
        return hp

    def is_condition(self, condition: str) -> bool:
        """Override when conditions are parametrised (e.g. 'frozen-rand@flip')."""
        return condition in self.conditions

    def prepare(self, hp: Any, device: str = "cpu",
                log: Callable[[str], None] | None = None) -> Sequence[Path]:
        """Work every job of a run shares, done once by the engine's driver before any job is
        dispatched (e.g. pretraining a transfer source into the cache), with the jobs' torch
        thread count; ``log`` takes progress lines.  Returns the directories the jobs will read,
        which executors whose workers do not share this machine's disk ship to them.  Jobs must
        still work without it (they find the cached result, or compute it themselves)."""
        return ()

    @abc.abstractmethod
    def trials(self, hp: Any) -> list[TrialKey]: ...

    @abc.abstractmethod
    def jobs(self, hp: Any) -> list[Job]: ...

    @abc.abstractmethod
    def run_job(self, hp: Any, job: Job, device: str = "cpu") -> list[TrialResult]: ...

    def report(self, hp: Any, epochs: "Any", trials: "Any", outdir: Path) -> str:
        """``epochs``: the tidy per-epoch pandas frame (export's columns, extras as columns);
        ``trials``: one row per trial (condition, n, width, trial, seed, wall_s, status, extra).
        Write PNG/CSV files into ``outdir`` and return Markdown that links them."""
        return ""
