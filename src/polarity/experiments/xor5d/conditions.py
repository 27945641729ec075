"""XOR-5D hyper-parameters, presets and conditions, and what the conditions of one trial share.

A condition is ``(frozen|fluid)-(rand|sufficient)``, optionally ``@<reset>`` for a frozen one.
Every condition of a trial starts from the same initialisation (made compliant by flipping, so
magnitudes are shared) and sees the same batch order (SPEC §3, §4; docs/xor5d.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from ...freeze.methods import RESET_METHODS, ResetError, check_method
from ...models.mlp import init_params
from ..base import MAX_GRID_TRIALS, ExperimentError, Range, positive
from ..hparams import FrozenHparams, hparam

FIG1_N = (8, 20, 32, 40, 52, 60, 72, 80, 92, 100, 500)
FIG4_WIDTHS = tuple(range(2, 30)) + (30, 32, 48, 64)
BASE_CONDITIONS = ("frozen-sufficient", "frozen-rand", "fluid-rand", "fluid-sufficient")


def _tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


@dataclass(frozen=True)
class XorHparams(FrozenHparams):
    conditions: tuple[str, ...] = ("frozen-sufficient", "frozen-rand", "fluid-rand")
    sample_sizes: tuple[int, ...] = hparam(FIG1_N, "training-set sizes n, floored to multiples of 4 (a grid axis)")
    widths: tuple[int, ...] = hparam((64,), "hidden widths H (a grid axis)")
    trials: int = 50
    epochs: int = 100
    lr: float = 0.03
    batch_size: int = 32
    val_size: int = 1000
    cutoffs: tuple[float, ...] = hparam((0.9,), "validation-accuracy cut-offs of the report's success rates")
    reset_eps: float = hparam(1e-3, "eps of the posCon / posRand resets: a violating weight becomes t*eps "
                                    "(posRand: t*eps*u)")
    variant: str = hparam("xor", "XOR data: xor (reference generator) | gaussian (Gaussian parity)")
    gaussian_sd: float = hparam(0.25, "the Gaussian parity variant's standard deviation")
    dim: int = hparam(5, "input dimension (the first two decide the label)")
    beta1: float = hparam(0.9, "Adam's beta1")
    beta2: float = hparam(0.999, "Adam's beta2")
    adam_eps: float = hparam(1e-7, "Adam's eps (Keras' default)")
    eps_mode: str = hparam("torch", "torch | keras: where Adam's eps enters (docs/xor5d.md)")
    sign_switch: bool = hparam(False, "record per-epoch sign-switch fractions (extra metrics)")
    dtype: str = hparam("float32", "float32 | float64")
    max_job_networks: int = hparam(0, "0: no cap; else split groups so a job holds at most this many")
    merge_ratio: float = hparam(1.25, "jobs merge widths / batches-per-epoch within this ratio (padding, masks)")

    # the ranges of the numbers, checked by Experiment.validate before a run directory is created
    # (trials, threads, seed: the engine's common limits; betas and cut-offs: Xor5D.validate);
    # the upper bounds only refuse the absurd: a job holds trials x (max n + val_size) x dim inputs
    limits: ClassVar[Mapping[str, Range]] = {
        "sample_sizes": Range(4, 1_000_000), "widths": Range(1, 100_000), "epochs": Range(1, 1_000_000),
        "lr": positive(1e3), "batch_size": Range(1, 1_000_000), "reset_eps": positive(1e3),
        "gaussian_sd": positive(1e3), "dim": Range(2, 1_000), "val_size": Range(1, 1_000_000),
        "adam_eps": positive(1.0), "max_job_networks": Range(0, MAX_GRID_TRIALS),
        "merge_ratio": Range(1, 1e6)}

    def __post_init__(self):
        for f in ("conditions", "sample_sizes", "widths", "cutoffs"):
            object.__setattr__(self, f, _tuple(getattr(self, f)))


PRESETS = {
    "fig1": XorHparams(sign_switch=True),
    "fig4": XorHparams(widths=FIG4_WIDTHS, sample_sizes=FIG1_N),
    "fig4-n500": XorHparams(widths=FIG4_WIDTHS, sample_sizes=(500,)),
    "c1": XorHparams(conditions=tuple(f"{c}@{r}" for c in ("frozen-sufficient", "frozen-rand")
                                      for r in RESET_METHODS) + ("fluid-rand",)),
    "quick": XorHparams(sample_sizes=(8, 40, 100), widths=(8, 64), trials=3, epochs=20,
                        conditions=BASE_CONDITIONS, sign_switch=True, merge_ratio=100.0),
}


@dataclass(frozen=True)
class Condition:
    name: str
    frozen: bool
    template: str  # "rand" | "sufficient"
    reset: str


def parse_condition(name: str, default_reset: str = "posRand") -> Condition:
    """``frozen-rand@flip`` -> Condition(frozen, "rand", "flip"); a missing ``@`` takes
    ``default_reset``.  Unknown names or reset methods raise ``ExperimentError``."""
    base, _, method = name.partition("@")
    if base not in BASE_CONDITIONS:
        raise ExperimentError(f"unknown xor5d condition {name!r}; known: {', '.join(BASE_CONDITIONS)}"
                              f" (optionally '@<reset>' with reset in {', '.join(RESET_METHODS)})")
    method = method or default_reset
    try:
        check_method(method)
    except ResetError as e:
        raise ExperimentError(f"condition {name!r}: {e}") from None
    if "@" in name and base.startswith("fluid"):
        raise ExperimentError(f"condition {name!r}: a fluid condition has no reset method")
    return Condition(name, base.startswith("frozen"), base.split("-", 1)[1], method)


def sufficient_output_signs(w1: np.ndarray) -> np.ndarray:
    """The sufficient template of the output layer (SPEC §4): hidden unit j's output weight gets
    ``sign(w1[j, 0] * w1[j, 1])``, the product of the signs of its weights from the two relevant
    inputs.  ``w1``: ``fc1.weight`` ``[width, dim]``; returns ``[width]`` of +1/-1 (0 when the
    product is 0)."""
    return np.sign(w1[:, 0] * w1[:, 1])


def initial_state(seed: int, width: int, condition: Condition, dim: int = 5,
                  params: dict | None = None) -> tuple[dict, dict]:
    """The starting parameters and template of one network (numpy float32 arrays, nn.Linear
    layout).  Template: ``{}`` for fluid conditions, else signs for fc1.weight and fc2.weight.
    ``rand`` keeps the initialisation's own signs; ``sufficient`` keeps the first layer's and
    flips the output weights into the sufficient pattern (magnitudes unchanged).
    ``params``: ``init_params(seed, width, dim)`` when the caller already has it (not modified)."""
    if params is None:
        params = init_params(seed, width, dim)
    p = {k: v.copy() for k, v in params.items()}
    t1 = np.sign(p["fc1.weight"])
    if condition.template == "sufficient":
        t2 = sufficient_output_signs(p["fc1.weight"])[None, :]
        p["fc2.weight"] = np.where(p["fc2.weight"] * t2 < 0, -p["fc2.weight"], p["fc2.weight"])
    else:
        t2 = np.sign(p["fc2.weight"])
    tmpl = {"fc1.weight": t1.astype(np.int8), "fc2.weight": t2.astype(np.int8)} if condition.frozen else {}
    return p, tmpl


def epoch_permutations(seed: int, n: int, epochs: int) -> np.ndarray:
    """The batch order of a (trial seed, n): one uniform permutation of ``range(n)`` per epoch,
    ``[epochs, n]``.  Shared by every condition and width of the trial."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 11, int(n)])))
    return np.argsort(rng.random((epochs, n)), axis=1, kind="stable")


__all__ = ["FIG1_N", "FIG4_WIDTHS", "BASE_CONDITIONS", "XorHparams", "PRESETS",
           "Condition", "parse_condition", "sufficient_output_signs", "initial_state",
           "epoch_permutations"]
