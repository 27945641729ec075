"""The registered ``xor5d`` experiment: validation of the hyper-parameters, the grid, one job's
run through the batched trainer, and its records for the store (SPEC §4, §6; docs/xor5d.md)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ...freeze.methods import ResetError, check_method
from .. import register
from ..base import EpochColumns, Experiment, ExperimentError, Job, TrialKey, TrialResult
from .conditions import BASE_CONDITIONS, PRESETS, XorHparams, parse_condition
from .plan import job_layout, plan_jobs, prepare_job
from .trainer import BatchedResult, train_batched


@register
class Xor5D(Experiment):
    name = "xor5d"
    description = ("XOR-5D simulation (paper Figures 1, 4, C.1): frozen vs fluid polarity on a "
                   "5->H->1 ReLU net, all trials x conditions of a job batched in one tensor program.")
    Hparams = XorHparams
    conditions = BASE_CONDITIONS
    cli_fields = {"reset": "", "variant": ""}  # their own flags; the help is the fields' (XorHparams)
    presets = PRESETS
    renamed = {"n_val": "val_size"}  # spec format 1 -> 2

    def is_condition(self, condition: str) -> bool:
        try:
            parse_condition(condition)
            return True
        except ExperimentError:
            return False

    def validate(self, hp: XorHparams) -> None:
        super().validate(hp)   # types and number ranges (XorHparams.limits)
        if not hp.sample_sizes or not hp.widths:
            raise ExperimentError("xor5d: sample_sizes and widths need at least one value")
        fl = [n // 4 * 4 for n in hp.sample_sizes]
        if len(set(fl)) != len(fl):
            raise ExperimentError(f"xor5d: sample sizes {hp.sample_sizes} collide once floored to "
                                  f"multiples of 4 ({fl})")
        try:
            check_method(hp.reset)
        except ResetError as e:
            raise ExperimentError(f"xor5d: {e}") from None
        if hp.variant not in ("xor", "gaussian"):
            raise ExperimentError(f"xor5d: unknown variant {hp.variant!r}; known: xor, gaussian")
        if hp.eps_mode not in ("torch", "keras"):
            raise ExperimentError(f"xor5d: eps_mode must be 'torch' or 'keras', got {hp.eps_mode!r}")
        if not (0 <= hp.beta1 < 1 and 0 <= hp.beta2 < 1):
            raise ExperimentError(f"xor5d: betas must lie in [0, 1), got ({hp.beta1!r}, {hp.beta2!r})")
        if hp.dtype not in ("float32", "float64"):
            raise ExperimentError(f"xor5d: dtype must be float32 or float64, got {hp.dtype!r}")
        for c in hp.cutoffs:
            if not 0 < c <= 1:
                raise ExperimentError(f"xor5d: cut-offs must lie in (0, 1], got {c}")

    # -- grid
    def trials(self, hp: XorHparams) -> list[TrialKey]:
        self.validate(hp)
        return [TrialKey(c, n // 4 * 4, w, t) for c in hp.conditions for n in hp.sample_sizes
                for w in hp.widths for t in range(hp.trials)]

    def jobs(self, hp: XorHparams) -> list[Job]:
        self.validate(hp)
        return plan_jobs(hp)

    # -- compute
    def run_job(self, hp: XorHparams, job: Job, device: str = "cpu") -> list[TrialResult]:
        self.validate(hp)
        t0 = time.perf_counter()
        old_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(hp.threads)))
        try:
            groups, cols = job_layout(hp, job)
            job_arrays, seeds, conds = prepare_job(hp, groups, cols, device)
            res = train_batched(job_arrays)
        finally:
            torch.set_num_threads(old_threads)
        wall = time.perf_counter() - t0
        return self._results(hp, job, groups, cols, conds, seeds, res, wall)

    def _results(self, hp, job, groups, cols, conds, seeds, res: BatchedResult, wall) -> list[TrialResult]:
        """Each trial's per-epoch records as ``EpochColumns``: views into one ``[G, C, series,
        epoch]`` float64 array of the job (no object per epoch)."""
        gpos = {g: i for i, g in enumerate(groups)}
        cpos = {c: i for i, c in enumerate(cols)}
        series = torch.stack((res.train_loss, res.train_acc, res.val_loss, res.val_acc))  # [4, E, G, C]
        m = np.ascontiguousarray(series.numpy().transpose(2, 3, 0, 1), dtype=np.float64)  # [G, C, 4, E]
        sw = (np.ascontiguousarray(res.switch.numpy().transpose(2, 3, 1, 0), dtype=np.float64)
              if res.switch is not None else None)  # [G, C, 2, E]
        epoch = np.arange(1, hp.epochs + 1, dtype=np.int64)
        per_net = wall / max(1, len(job.trials))
        out = []
        for k in job.trials:
            gi, ci = gpos[(k.trial, k.n)], cpos[(k.condition, k.width)]
            extra = ({"switch/fc1.weight": sw[gi, ci, 0], "switch/fc2.weight": sw[gi, ci, 1]}
                     if sw is not None else {})
            cond = conds[ci]
            out.append(TrialResult(k, seeds[k.trial], per_net, EpochColumns(epoch, *m[gi, ci], extra), extra={
                "job": job.key, "job_networks": len(job.trials), "job_wall_s": wall,
                "frozen": cond.frozen, "template": cond.template,
                "reset": cond.reset if cond.frozen else None}))
        return out

    # -- report
    def report(self, hp: XorHparams, epochs, trials, outdir: Path) -> str:
        from .report import xor_report  # matplotlib (~0.8 s): loaded only when a report is drawn

        return xor_report(hp, epochs, trials, Path(outdir))


__all__ = ["Xor5D"]
