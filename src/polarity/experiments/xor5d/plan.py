"""Job planning for XOR-5D: which networks train together, and the inputs of one job.

A job is groups ``(trial, n)`` x columns ``(condition, width)``.  Jobs group sample sizes of
similar batches-per-epoch and widths of a similar size (``merge_ratio``), so that masking and
padding waste little; a network's numbers never depend on its job (docs/xor5d.md).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...data.xor import trial_data
from ...models.mlp import init_params
from ...seeds import network_reset_seed, trial_seed
from ..base import Job, TrialKey
from .conditions import Condition, XorHparams, epoch_permutations, initial_state, parse_condition
from .trainer import XorJob


def width_buckets(widths: Sequence[int], ratio: float = 1.25) -> list[tuple[int, ...]]:
    """Consecutive sorted widths grouped so that each bucket's largest width is at most
    ``ratio * smallest + 1`` (little padding waste)."""
    out: list[list[int]] = []
    for w in sorted(set(widths)):
        if out and w <= ratio * out[-1][0] + 1:
            out[-1].append(w)
        else:
            out.append([w])
    return [tuple(b) for b in out]


def batch_buckets(nbs: Sequence[int], ratio: float = 1.25) -> list[tuple[int, ...]]:
    """Batches-per-epoch values grouped into jobs; merging b and b' masks (1 - b/b') of the
    smaller groups' steps, so only values within ``ratio`` are merged."""
    out: list[list[int]] = []
    for b in sorted(set(nbs)):
        if out and b <= ratio * out[-1][0]:
            out[-1].append(b)
        else:
            out.append([b])
    return [tuple(x) for x in out]


def plan_jobs(hp: XorHparams) -> list[Job]:
    """Every trial of the grid, grouped into jobs: per bucket of batches-per-epoch and bucket of
    widths, all trials x conditions, split so a job holds at most ``hp.max_job_networks``."""
    ns = sorted({n // 4 * 4 for n in hp.sample_sizes})
    nb = {n: -(-n // hp.batch_size) for n in ns}
    jobs = []
    for bb in batch_buckets(list(nb.values()), hp.merge_ratio):
        bns = [n for n in ns if nb[n] in bb]
        for wb in width_buckets(hp.widths, hp.merge_ratio):
            groups = [(t, n) for n in bns for t in range(hp.trials)]
            per_group = len(wb) * len(hp.conditions)
            cap = max(1, hp.max_job_networks // per_group) if hp.max_job_networks else len(groups)
            for k in range(0, len(groups), cap):
                part = groups[k:k + cap]
                key = f"n{bns[0]}-{bns[-1]}/w{wb[0]}-{wb[-1]}" + (f"/{k // cap}" if cap < len(groups) else "")
                jobs.append(Job(key, tuple(TrialKey(c, n, w, t) for (t, n) in part
                                           for c in hp.conditions for w in wb)))
    return jobs


def job_layout(hp: XorHparams, job: Job) -> tuple[list[tuple[int, int]], list[tuple[str, int]]]:
    """The groups ``(trial, n)`` and columns ``(condition, width)`` of a job, in a fixed order."""
    groups = sorted({(k.trial, k.n) for k in job.trials})
    cols = sorted({(k.condition, k.width) for k in job.trials},
                  key=lambda cw: (hp.conditions.index(cw[0]) if cw[0] in hp.conditions else 99, cw))
    return groups, cols


def prepare_job(hp: XorHparams, groups: Sequence[tuple[int, int]], cols: Sequence[tuple[str, int]],
                device: str = "cpu") -> tuple[XorJob, dict[int, int], list[Condition]]:
    """The job of groups ``(trial, n)`` x columns ``(condition, width)``, as ``train_batched``
    reads it: per-trial data, shared initialisations (made compliant per condition), templates,
    batch orders, each network's posRand seed.  Returns (the job, {trial: seed}, [Condition per
    column])."""
    dt = getattr(torch, hp.dtype)
    trials_ = sorted({t for t, _ in groups})
    tpos = {t: i for i, t in enumerate(trials_)}
    seeds = {t: trial_seed(hp.seed, t) for t in trials_}
    n_max = max(n for _, n in groups)
    data = [trial_data(seeds[t], n_max, hp.val_size, hp.dim, hp.variant, hp.gaussian_sd) for t in trials_]
    as_t = lambda arrs: torch.from_numpy(np.stack(arrs)).to(device=device, dtype=dt)  # noqa: E731
    conds = [parse_condition(c, hp.reset) for c, _ in cols]
    init, tmpl = _initial_states(hp, groups, cols, conds, seeds)
    job = XorJob(
        x_train=as_t([dd.x_train for dd in data]), y_train=as_t([dd.y_train for dd in data]),
        x_val=as_t([dd.x_val for dd in data]), y_val=as_t([dd.y_val for dd in data]),
        group_trial=tuple(tpos[t] for t, _ in groups), group_n=tuple(n for _, n in groups),
        perms=tuple(epoch_permutations(seeds[t], n, hp.epochs) for t, n in groups),
        init={k: torch.from_numpy(v).to(device=device, dtype=dt) for k, v in init.items()},
        templates={k: torch.from_numpy(v).to(device) for k, v in tmpl.items()},
        column_reset=tuple(c.reset if c.frozen else None for c in conds), widths=tuple(w for _, w in cols),
        reset_seeds=np.array([[network_reset_seed(hp.seed, t, n, c, w) for c, w in cols] for t, n in groups],
                             dtype=np.int64).reshape(len(groups), len(cols)),
        epochs=hp.epochs, lr=hp.lr, batch_size=hp.batch_size, betas=(hp.beta1, hp.beta2),
        eps=hp.adam_eps, eps_mode=hp.eps_mode, reset_eps=hp.reset_eps, sign_switch=hp.sign_switch)
    return job, seeds, conds


def _initial_states(hp, groups, cols, conds, seeds) -> tuple[dict, dict]:
    """Every network's start and template in the batched layout (zero-padded to the widest
    column): one initialisation per (trial, width), shared by the conditions and sample sizes."""
    G, C, Hp, d = len(groups), len(cols), max(w for _, w in cols), hp.dim
    init = {"fc1.weight": np.zeros((G, C, Hp, d), np.float32), "fc1.bias": np.zeros((G, C, Hp), np.float32),
            "fc2.weight": np.zeros((G, C, Hp), np.float32), "fc2.bias": np.zeros((G, C), np.float32)}
    tmpl = {"fc1.weight": np.zeros((G, C, Hp, d), np.int8), "fc2.weight": np.zeros((G, C, Hp), np.int8)}
    cache: dict = {}
    base: dict = {}
    for gi, (t, n) in enumerate(groups):
        for ci, ((_, w), cond) in enumerate(zip(cols, conds)):
            key = (t, w, cond.template, cond.frozen)
            if key not in cache:
                if (t, w) not in base:
                    base[(t, w)] = init_params(seeds[t], w, d)
                cache[key] = initial_state(seeds[t], w, cond, d, params=base[(t, w)])
            p, tm = cache[key]
            init["fc1.weight"][gi, ci, :w] = p["fc1.weight"]
            init["fc1.bias"][gi, ci, :w] = p["fc1.bias"]
            init["fc2.weight"][gi, ci, :w] = p["fc2.weight"][0]
            init["fc2.bias"][gi, ci] = p["fc2.bias"][0]
            if tm:
                tmpl["fc1.weight"][gi, ci, :w] = tm["fc1.weight"]
                tmpl["fc2.weight"][gi, ci, :w] = tm["fc2.weight"][0]
    return init, tmpl


__all__ = ["width_buckets", "batch_buckets", "plan_jobs", "job_layout", "prepare_job"]
