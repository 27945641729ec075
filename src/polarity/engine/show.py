"""``polarity show EXP``: a resolved spec described before anything runs — every hyper-parameter
with its help, the conditions, the trial and job counts, and an estimate of the compute time.

The time is an **estimate** from a simple cost model, stated here and printed with it:

    seconds = sum over trials of  c * scale * (epochs(n) * n  +  validations(n) * v / 3)
              + jobs * c_job

* ``n``: the trial's training-set size; ``v``: the validation size (the Hparams' ``val_size``;
  ``None`` counts 10,000); a forward pass costs about a third of a
  training step;
* ``epochs(n)`` and ``validations(n)``: the experiment's own rule where the Hparams' module has
  one (``epochs_for(hp, n)``, ``eval_epochs(hp, n)``: the image protocol's training budget),
  else ``hp.epochs`` for both;
* ``c`` (seconds per example-step) and ``c_job`` (seconds per job: start-up, data, compilation):
  for the image protocol ``c`` is *measured* when ``show`` runs: the fastest of a few SGD steps of
  the spec's own network on random images, one thread (``example_seconds`` beside the Hparams),
  times a constant overhead (data, validation, the freezer) fitted once on a study whose CPU time
  was measured; so the estimate follows the machine, the architecture and its size.  For XOR-5D
  and the toy ``c`` was measured on the development VM (2-vCPU Xeon @ 2.80 GHz, one thread per
  job; ``COSTS``), ``scale`` being the hidden width.  An experiment without a constant, or a
  network that cannot be built here, gets no estimate.  Wall time divides the total by the
  workers a run can keep busy (at most its jobs).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from ..experiments.base import Experiment, TrialKey
from .spec import Spec, field_help, format_value

VAL_WHOLE = 10_000  # a validation size of None (the whole test split) counts this many examples


@dataclass(frozen=True)
class Cost:
    per_example: float  # seconds per example and epoch (training) at scale 1
    per_job: float  # seconds per job
    scale: Callable[[Any, TrialKey], float | None] = lambda hp, key: 1.0  # None: no constant known
    measured: str = ""
    measures_step: bool = False  # per_example is a multiple of the hparams module's example_seconds(hp)


# the image protocol's whole cost per example-epoch (data, validation, the freezer, Python) over
# example_seconds' bare SGD step, fitted on an idle znver3 VM: the dose study (360 trials, 2
# workers) took 38.6 CPU-min where example_seconds measured 4.5-5.2e-4 s.  On a loaded machine both
# grow (the step 2-3x, the study ~1.4-1.8x: 312 trials took 54-70 CPU-min), so a busy machine's
# estimate reads high
_IMAGE_OVERHEAD = 1.0
_IMAGES = Cost(_IMAGE_OVERHEAD, 3.0, lambda hp, key: 1.0,
               "the dose study (360 trials, 38.6 CPU-min, idle) and this machine's measured SGD step",
               measures_step=True)
COSTS: Mapping[str, Cost] = {
    "xor5d": Cost(5.8e-10, 0.1, lambda hp, key: float(max(key.width, 1)) * (hp.dim + 1) / 6,
                  "fig1 (1,650 networks, 2.4 s) and fig4 (52,800 networks, 26.6 s), one core"),
    "toy": Cost(1e-6, 0.03, lambda hp, key: float(max(key.width, hp.dim)) / 5,
                "the grid preset (48 trials, 0.4 s)"),
    "fmnist": _IMAGES, "cifar10": _IMAGES, "images": _IMAGES, "dose": _IMAGES,
}


def _val_size(hp: Any) -> int:
    if not hasattr(hp, "val_size"):
        return 0
    return VAL_WHOLE if hp.val_size is None else int(hp.val_size)


def _hook(hp: Any, name: str) -> Callable | None:
    """The module-level function ``name`` of the module defining ``hp``'s class or a base class
    (``epochs_for``, ``eval_epochs``, ``example_seconds``), or None."""
    for cls in type(hp).__mro__:
        fn = getattr(sys.modules.get(cls.__module__), name, None)
        if callable(fn):
            return fn
    return None


def estimate_seconds(exp: Experiment, hp: Any, trials: list[TrialKey], n_jobs: int) -> float | None:
    """CPU seconds for every trial of ``hp`` by the cost model above; None when it has no
    constant for this experiment or architecture."""
    cost = COSTS.get(exp.name)
    if cost is None:
        return None
    epochs_for, eval_epochs = _hook(hp, "epochs_for"), _hook(hp, "eval_epochs")
    per_example = cost.per_example
    if cost.measures_step:
        measure = _hook(hp, "example_seconds")
        if measure is None or not trials:
            return None
        try:
            per_example *= measure(hp)
        except Exception:  # a network that cannot be built here (e.g. a factory's import) has no estimate
            return None
    v = _val_size(hp)
    total, cache = 0.0, {}
    for key in trials:
        if key.n not in cache:
            e = int(epochs_for(hp, key.n)) if epochs_for else int(getattr(hp, "epochs", 1))
            k = len(eval_epochs(hp, key.n)) if eval_epochs else e
            cache[key.n] = e * key.n + k * v / 3
        s = cost.scale(hp, key)
        if s is None:
            return None
        total += per_example * s * cache[key.n]
    return total + n_jobs * cost.per_job


def fmt_estimate(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(exp: Experiment, spec: Spec, *, workers: int = 1, preset_hp: Any = None) -> str:
    """The text of ``polarity show``."""
    from .runner import plan

    hp = spec.hp
    help_ = field_help(type(hp), dict(exp.cli_fields))
    base = preset_hp if preset_hp is not None else exp.presets.get(spec.preset)
    lines = [f"{exp.name} (preset {spec.preset}): {exp.description}", f"spec hash {spec.hash}", "",
             "hyper-parameters (* differs from the preset):"]
    names = [f.name for f in fields(hp)]
    width = max(len(n) for n in names)
    for name in names:
        value = format_value(getattr(hp, name))
        if len(value) > 60:
            value = value[:57] + "..."
        mark = "*" if base is not None and getattr(base, name, object()) != getattr(hp, name) else " "
        h = " ".join(help_.get(name, "").split())
        lines.append(f" {mark}{name:<{width}}  {value}" + (f"\n  {'':<{width}}    {h}" if h else ""))
    trials, jobs = plan(exp, hp)
    conds = ", ".join(hp.conditions)
    lines += ["", f"conditions: {conds}", f"trials: {len(trials):,} in {len(jobs):,} jobs"]
    est = estimate_seconds(exp, hp, trials, len(jobs))
    if est is None:
        lines.append("estimated time: no cost constant for this experiment or architecture")
    else:
        busy = max(1, min(int(workers), len(jobs)))
        cost = COSTS[exp.name]
        lines.append(f"estimated time: about {fmt_estimate(est / busy)} with {busy} worker(s) "
                     f"({fmt_estimate(est)} of CPU, one thread per job)")
        lines.append(f"  an estimate, not a measurement: the cost model of polarity.engine.show, calibrated on "
                     f"{cost.measured}; expect up to a factor of two either way, more on a busy machine")
    return "\n".join(lines)
