"""The contract between an experiment and the engine.

An experiment is a typed hyper-parameter dataclass plus four functions:

* ``trials(hp)``: every trial of the grid, keyed by (condition, n, width, trial);
* ``jobs(hp)``: the same trials grouped into units of work.  The grouping must be a pure,
  deterministic function of ``hp`` (never of what is already done), so that a resumed run
  recomputes exactly the jobs that were lost and gets identical numbers;
* ``run_job(hp, job, device)``: computes every trial of one job and returns their results.
  It must be deterministic given (hp, job): seeds come from ``trial_seed(hp.seed, trial)``;
* ``report(hp, epochs, trials, outdir)``: figures/tables for a finished (or partial) run,
  computed only from the store's tidy frames; returns a Markdown section.

The engine (``polarity.engine``) owns expansion, storage, resume, executors and progress;
an experiment never touches the database.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import gc
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from ..seeds import trial_seed  # noqa: F401  (re-exported: the experiments' seed)


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


@dataclass
class TrialResult:
    key: TrialKey
    seed: int
    wall_s: float
    epochs: list[EpochRecord]
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


class Experiment(abc.ABC):
    """Subclass, set the class attributes, implement the four methods, and ``@register`` it."""

    name: ClassVar[str]
    description: ClassVar[str]
    Hparams: ClassVar[type]  # a frozen dataclass with at least: conditions, trials, seed
    presets: ClassVar[Mapping[str, Any]]  # preset name -> Hparams instance
    conditions: ClassVar[Sequence[str]]  # every condition this experiment knows
    # hparams fields exposed as their own flags on `polarity run NAME` (e.g. {"source": "..."})
    cli_fields: ClassVar[Mapping[str, str]] = {}

    def validate(self, hp: Any) -> None:
        unknown = [c for c in hp.conditions if not self.is_condition(c)]
        if unknown:
            raise ExperimentError(
                f"unknown condition(s) {unknown} for experiment {self.name!r}; "
                f"known: {', '.join(self.conditions)}"
            )

    def is_condition(self, condition: str) -> bool:
        """Override when conditions are parametrised (e.g. 'frozen-rand@flip')."""
        return condition in self.conditions

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
