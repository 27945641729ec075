"""The experiment engine: specs and overrides, trial grids and jobs, executors (local, process
pool, Ray), resume, progress and reports.  Results live in ``polarity.store``.

Programmatic use::

    from polarity import engine
    exp = engine.get_experiment("toy")
    spec = engine.resolve(exp, "quick", sets=["trials=3"])
    summary = engine.run_spec(spec, "runs/my-run", executor="local", workers=2)
    engine.write_report("runs/my-run")
"""
from __future__ import annotations

from ..experiments import get as get_experiment, names as experiment_names
from .executors import EXECUTORS, LocalExecutor, PoolExecutor, RayExecutor, execute_job, make_executor
from .hardware import hardware_info
from .report import write_report
from .runner import RunDirError, RunSummary, load_spec, open_run, plan, prepare_run_dir, run_spec, upgrade_run
from .spec import (Spec, SpecError, default_preset, default_run_dir, hparams_from_dict, parse_value,
                   resolve, spec_hash)

__all__ = ["EXECUTORS", "LocalExecutor", "PoolExecutor", "RayExecutor", "RunDirError", "RunSummary",
           "Spec", "SpecError", "default_preset", "default_run_dir", "execute_job", "experiment_names",
           "get_experiment", "hardware_info", "hparams_from_dict", "load_spec", "make_executor", "open_run",
           "parse_value", "plan", "prepare_run_dir", "resolve", "run_spec", "spec_hash", "upgrade_run",
           "write_report"]
