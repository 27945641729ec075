"""CPU cost of the Lightning callback: a Lightning fit with and without ``PolarityCallback``, and
the freezer's own reset on the same parameters against a plain copy of them.

    .venv/bin/python benchmarks/integrations.py [--steps 60] [--repeats 5] [--width 1024]

Prints one JSON line.  Per-batch times are medians over the batches of ``repeats`` fits of each
kind, interleaved.  ``callback_slowdown`` is the end-to-end ratio of a step (on a busy VM its
noise exceeds the effect); ``callback_own_ms`` is the callback's own work per step, measured
inside the fit (the reset in the step hook plus the logging), and ``callback_own_fraction`` its
share of a plain step: the number that resolves the cost.  ``reset_ms`` / ``copy_ms`` /
``reset_over_copy`` time the freezer's reset alone on the same parameters (1% violating) against
a copy of them, the ratio benchmarks/freezer.py bounds (<= 1.5) on AlexNet-sized parameters.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch
from torch import nn

import polarity
from polarity import Freezer, Template, impose
from polarity.integrations.lightning import PolarityCallback


class MLP(pl.LightningModule):
    def __init__(self, width: int):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, width),
                                 nn.ReLU(), nn.Linear(width, 10))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class BatchTimer(pl.Callback):
    def __init__(self):
        self.times, self._t0 = [], 0.0

    def on_train_batch_start(self, *args):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, *args):
        self.times.append(time.perf_counter() - self._t0)


class TimedCallback(PolarityCallback):
    """The callback, timing its own work per step: the reset (the freezer's hook) and the
    logging in on_train_batch_end."""

    def __init__(self, template):
        super().__init__(template, seed=0)
        self.own, self._t = [], 0.0

    def on_fit_start(self, trainer, pl_module):
        super().on_fit_start(trainer, pl_module)
        project = self.freezer.project

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = project(*args, **kwargs)
            self._t += time.perf_counter() - t0
            return out
        self.freezer.project = timed

    def on_train_batch_end(self, *args):
        t0 = time.perf_counter()
        super().on_train_batch_end(*args)
        self.own.append(self._t + time.perf_counter() - t0)
        self._t = 0.0


def fit(width, steps, data, template=None) -> tuple[list[float], list[float]]:
    model, timer = MLP(width), BatchTimer()
    cb = TimedCallback(template) if template is not None else None
    pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
               callbacks=[cb, timer] if cb else [timer]).fit(model, data)
    return timer.times[5:], cb.own[5:] if cb else []  # the first batches warm caches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch * args.steps, 256, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=args.batch)
    template = Template.random(MLP(args.width), seed=0)

    plain, frozen, own = [], [], []
    for _ in range(args.repeats):
        plain += fit(args.width, args.steps, data)[0]
        times, mine = fit(args.width, args.steps, data, template)
        frozen += times
        own += mine

    # the reset alone on the same parameters, 1% violating, against a copy of them
    model = MLP(args.width)
    impose(model, template)
    freezer = Freezer(model, template, seed=0)
    params = [p for _, p in freezer.named_parameters()]
    clean = [p.detach().clone() for p in params]
    resets, copies = [], []
    for r in range(30):
        with torch.no_grad():
            for p, c in zip(params, clean):
                p.copy_(c)
                flip = torch.rand(p.shape, generator=g) < 0.01
                p[flip] *= -1
        t0 = time.perf_counter()
        freezer.project()
        resets.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for p, c in zip(params, clean):
            c.copy_(p)
        copies.append(time.perf_counter() - t0)
    med = statistics.median
    plain_ms, frozen_ms = med(plain) * 1e3, med(frozen) * 1e3
    reset_ms, copy_ms = med(resets[3:]) * 1e3, med(copies[3:]) * 1e3
    print(json.dumps({
        "benchmark": "integrations_lightning", "polarity": polarity.__version__,
        "lightning": pl.__version__, "torch": torch.__version__, "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(), "constrained_entries": template.numel(),
        "steps": args.steps, "repeats": args.repeats, "batch": args.batch,
        "plain_step_ms": round(plain_ms, 3), "callback_step_ms": round(frozen_ms, 3),
        "callback_slowdown": round(frozen_ms / plain_ms, 3),
        "reset_ms": round(reset_ms, 3), "copy_ms": round(copy_ms, 3),
        "reset_over_copy": round(reset_ms / copy_ms, 3),
        "reset_fraction": round(reset_ms / frozen_ms, 4),
        "callback_own_ms": round(med(own) * 1e3, 3),
        "callback_own_fraction": round(med(own) * 1e3 / plain_ms, 4),
    }))


if __name__ == "__main__":
    main()
