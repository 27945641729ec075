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
* ``c`` (seconds per example-step) and ``c_job`` (seconds per job: start-up, data, compilation)
  were measured on the development VM (2-vCPU Xeon @ 2.80 GHz, one torch thread per job, no GPU;
  ``COSTS``); ``scale``: the hidden width for XOR-5D, (in_size / 32)^2 * width / 0.5 for the
  compact image network.  An experiment or architecture without a measured constant gets no
  estimate.  Wall time divides the total by the workers a run can keep busy (at most its jobs).
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


def _image_scale(hp: Any, key: TrialKey) -> float | None:
    if getattr(hp, "arch", "compact") != "compact":
        return None  # AlexNet at 227x227: only measured on a GPU (benchmarks/gpu_check.sh)
    return (float(hp.in_size) / 32) ** 2 * float(hp.model_width) / 0.5


_IMAGES = Cost(2.2e-4, 3.0, _image_scale,
               "the Fashion-MNIST transfer study (216 trials, compact w0.5, 10.0 min on 2 workers)")
COSTS: Mapping[str, Cost] = {
    "xor5d": Cost(5.8e-10, 0.1, lambda hp, key: float(max(key.width, 1)) * (hp.dim + 1) / 6,
                  "fig1 (1,650 networks, 2.4 s) and fig4 (52,800 networks, 26.6 s), one core"),
    "toy": Cost(1e-6, 0.03, lambda hp, key: float(max(key.width, hp.dim)) / 5,
                "the grid preset (48 trials, 0.4 s)"),
    "fmnist": _IMAGES, "cifar10": _IMAGES, "images": _IMAGES,
}


def _val_size(hp: Any) -> int:
    if not hasattr(hp, "val_size"):
        return 0
    return VAL_WHOLE if hp.val_size is None else int(hp.val_size)


def estimate_seconds(exp: Experiment, hp: Any, trials: list[TrialKey], n_jobs: int) -> float | None:
    """CPU seconds for every trial of ``hp`` by the cost model above; None when it has no
    constant for this experiment or architecture."""
    cost = COSTS.get(exp.name)
    if cost is None:
        return None
    module = sys.modules.get(type(hp).__module__)
    epochs_for = getattr(module, "epochs_for", None)
    eval_epochs = getattr(module, "eval_epochs", None)
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
        total += cost.per_example * s * cache[key.n]
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
                     f"{cost.measured} on a 2-vCPU VM; expect up to a factor of two either way")
    return "\n".join(lines)
