"""Registry of experiments: name -> Experiment instance."""
from __future__ import annotations

import importlib

from .base import Experiment, ExperimentError, Job, TrialKey, TrialResult, EpochRecord, trial_seed

REGISTRY: dict[str, Experiment] = {}

# Modules that define experiments; each calls ``register`` at import time.
_MODULES = ("polarity.experiments.toy", "polarity.experiments.xor5d", "polarity.experiments.images")
_loaded = False


def register(cls):
    """Class decorator: instantiate and add to the registry under ``cls.name``."""
    inst = cls()
    REGISTRY[cls.name] = inst
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _MODULES:
        importlib.import_module(mod)
    _loaded = True


def get(name: str) -> Experiment:
    _load()
    if name not in REGISTRY:
        raise ExperimentError(f"unknown experiment {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def names() -> list[str]:
    _load()
    return sorted(REGISTRY)


__all__ = ["Experiment", "ExperimentError", "Job", "TrialKey", "TrialResult", "EpochRecord",
           "trial_seed", "register", "get", "names", "REGISTRY"]
