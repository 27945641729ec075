"""``toy``: a tiny, real experiment for exercising the engine (seconds to run).

Logistic regression on synthetic linearly-separable-ish data.  For each trial seed: a true weight
vector, a nested training set (the first n points of the trial's training stream), ``val_size``
validation points, a shared initialisation and a shared mini-batch order; none of them depends on
the grid beyond the trial's key, so a run grows along ``sample_sizes``, ``widths``, ``trials`` and
``conditions`` (``Experiment.grid_names``).  With ``width > 0`` the inputs first pass a
fixed random ReLU feature map of that width.  Conditions:

* ``a``: free weights (plain SGD);
* ``b``: weights whose polarity is frozen positive: after every step, negative entries are reset
  to 0 (a one-line Freeze-SGD with an all-positive template), starting from |init|.

Per epoch it records the contract metrics and ``switch``: the fraction of weights whose sign
changed during the epoch.  One job per (n, width) cell computes all trials and conditions.
``sleep_s`` (seconds per job) and ``fail_job`` (a job key that raises) exist for engine tests.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping

from . import register
from .base import EpochRecord, Experiment, ExperimentError, Job, Range, TrialKey, TrialResult, positive, trial_seed
from .hparams import CommonHparams, hparam


@dataclass(frozen=True)
class ToyHparams(CommonHparams):
    conditions: tuple[str, ...] = ("a", "b")
    sample_sizes: tuple[int, ...] = (16, 48)
    widths: tuple[int, ...] = hparam((0,), "width of the fixed random ReLU feature map (0: none; a grid axis)")
    trials: int = 2
    epochs: int = 5
    lr: float = 0.5
    batch_size: int = 8
    val_size: int = 200
    dim: int = hparam(5, "input dimension")
    noise: float = hparam(0.5, "label noise: the standard deviation added to the true logit")
    sleep_s: float = hparam(0.0, "seconds each job sleeps (engine tests)")
    fail_job: str = hparam("", "a job key that raises (engine tests)")

    # every number's range (``trials``, ``threads``, ``seed``: the engine's common limits); a toy
    # stays small: its largest trial holds (max(sample_sizes) + val_size) x max(dim, widths) float64 values
    limits: ClassVar[Mapping[str, Range]] = {
        "sample_sizes": Range(1, 100_000), "widths": Range(0, 1_000), "epochs": Range(1, 10_000),
        "dim": Range(1, 1_000), "lr": positive(1e3), "batch_size": Range(1, 100_000),
        "val_size": Range(1, 100_000), "noise": Range(0, 1e3), "sleep_s": Range(0, 3600)}


@register
class Toy(Experiment):
    name = "toy"
    description = "Tiny synthetic logistic regression (free vs positive-polarity weights), for engine tests."
    Hparams = ToyHparams
    conditions = ("a", "b")
    presets = {
        "quick": ToyHparams(),
        "grid": ToyHparams(sample_sizes=(8, 16, 32, 64), widths=(0, 8), trials=3, epochs=8),
    }
    renamed = {"ns": "sample_sizes", "batch": "batch_size", "val_n": "val_size"}  # spec format 1 -> 2

    def validate(self, hp: ToyHparams) -> None:
        super().validate(hp)  # types, ranges (ToyHparams.limits), duplicates, grid size
        if not hp.sample_sizes or not hp.widths:
            raise ExperimentError(f"toy: sample_sizes and widths need at least one value, got {hp.sample_sizes} "
                                  f"and {hp.widths}")

    def trials(self, hp: ToyHparams) -> list[TrialKey]:
        return [TrialKey(c, n, w, t) for n in hp.sample_sizes for w in hp.widths for c in hp.conditions
                for t in range(hp.trials)]

    def jobs(self, hp: ToyHparams) -> list[Job]:
        return [Job(f"n={n}/width={w}", tuple(TrialKey(c, n, w, t) for c in hp.conditions
                                               for t in range(hp.trials)))
                for n in hp.sample_sizes for w in hp.widths]

    def run_job(self, hp: ToyHparams, job: Job, device: str = "cpu") -> list[TrialResult]:
        import torch

        if hp.fail_job and job.key == hp.fail_job:
            raise RuntimeError(f"toy: job {job.key} fails on purpose (fail_job)")
        t0 = time.perf_counter()
        out = []
        for key in job.trials:
            out.append(self._trial(hp, key, torch.device(device)))
        if hp.sleep_s > 0:
            time.sleep(hp.sleep_s)
        wall = (time.perf_counter() - t0) / max(1, len(out))
        for r in out:
            r.wall_s = wall
        return out

    # ------------------------------------------------------------------------------------------
    def _trial(self, hp: ToyHparams, key: TrialKey, device) -> TrialResult:
        import numpy as np
        import torch
        import torch.nn.functional as F

        seed = trial_seed(hp.seed, key.trial)
        g = torch.Generator().manual_seed(seed)

        def stream(i: int, rows: int, cols: int):  # numpy fills row by row: a prefix never changes
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, i])))
            return torch.from_numpy(rng.standard_normal((rows, cols)))

        w_true = stream(0, 1, hp.dim)[0]

        def points(i: int, rows: int):  # inputs and their labels (the last column is the noise)
            z = stream(i, rows, hp.dim + 1)
            x = z[:, :hp.dim].contiguous()
            return x, ((x @ w_true + hp.noise * z[:, hp.dim]) > 0).double()

        x_tr, y_tr = points(1, key.n)
        x_va, y_va = points(2, hp.val_size)
        if key.width > 0:
            gf = torch.Generator().manual_seed(seed * 131 + key.width)
            proj = torch.randn(hp.dim, key.width, generator=gf, dtype=torch.float64) / hp.dim ** 0.5
            x_tr, x_va = torch.relu(x_tr @ proj), torch.relu(x_va @ proj)
        d = x_tr.shape[1]
        w = 0.1 * torch.randn(d, generator=g, dtype=torch.float64)
        b = torch.zeros((), dtype=torch.float64)
        frozen = key.condition == "b"
        if frozen:
            w = w.abs()
        orders = [torch.randperm(key.n, generator=g) for _ in range(hp.epochs)]
        x_tr, y_tr, x_va, y_va = (t.to(device) for t in (x_tr, y_tr, x_va, y_va))
        w, b = w.to(device), b.to(device)

        def evaluate(x, y):
            z = x @ w + b
            return float(F.binary_cross_entropy_with_logits(z, y)), float(((z > 0).double() == y).double().mean())

        epochs = []
        for e in range(hp.epochs):
            sign_before = torch.sign(w)
            order = orders[e].to(device)
            for i in range(0, key.n, hp.batch_size):
                idx = order[i: i + hp.batch_size]
                xb, yb = x_tr[idx], y_tr[idx]
                p = torch.sigmoid(xb @ w + b)
                err = p - yb
                w = w - hp.lr * (xb.T @ err) / len(idx)
                b = b - hp.lr * err.mean()
                if frozen:
                    w = torch.clamp(w, min=0.0)
            tl, ta = evaluate(x_tr, y_tr)
            vl, va = evaluate(x_va, y_va)
            switch = float((torch.sign(w) != sign_before).double().mean())
            epochs.append(EpochRecord(e + 1, tl, ta, vl, va, {"switch": switch}))
        return TrialResult(key, seed, 0.0, epochs, {"final_w_norm": float(w.norm())})

    def report(self, hp: ToyHparams, epochs, trials, outdir: Path) -> str:
        from ..analysis.metrics import per_trial, summarize

        pt = per_trial(epochs, cutoffs=(0.8,))
        summ = summarize(pt, cutoffs=(0.8,))
        summ.to_csv(Path(outdir) / "toy_summary.csv", index=False)
        lines = ["## Toy experiment", "",
                 "Validation error at the epoch of minimum validation loss (median over trials) and "
                 "success rate at validation accuracy 0.8.", "",
                 "| condition | n | width | trials | error (median) | success@0.8 |",
                 "|---|---|---|---|---|---|"]
        for _, r in summ.iterrows():
            lines.append(f"| {r['condition']} | {int(r['n'])} | {int(r['width'])} | {int(r['trials'])} | "
                         f"{r['error_median']:.3f} | {r['success_0.8']:.2f} |")
        lines += ["", "Table: [toy_summary.csv](toy_summary.csv)", ""]
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 3.2))
            for cond, gdf in epochs.groupby("condition"):
                m = gdf.groupby("epoch")["val_acc"].mean()
                ax.plot(m.index, m.values, marker="o", label=f"condition {cond}")
            ax.set_xlabel("epoch")
            ax.set_ylabel("mean validation accuracy")
            ax.legend()
            fig.tight_layout()
            fig.savefig(Path(outdir) / "toy_val_acc.png", dpi=100)
            plt.close(fig)
            lines += ["![validation accuracy](toy_val_acc.png)", ""]
        except Exception as e:  # noqa: BLE001 - a figure is optional
            lines += [f"(figure skipped: {e})", ""]
        return "\n".join(lines)
