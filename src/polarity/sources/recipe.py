"""How a source network is trained: a documented recipe, to convergence, on a CPU in minutes.

The recipe (docs/sources.md): the whole training split; SGD with Nesterov momentum 0.9 and weight
decay 5e-4; one epoch of linear warm-up, then a cosine decay of the learning rate to zero, stepped
after every batch; the augmentation usual for small images (random crop after zero-padding by
``pad`` pixels, which after normalisation is padding with the mean, and a horizontal flip);
accuracy measured on the whole test split.  Everything that determines the network is a field of
:class:`SourceRecipe`; with the same recipe and thread count the same network comes out.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..data.subsets import load
from ..models import build_model, init_glorot_
from ..training import evaluate, fit


@dataclass(frozen=True)
class SourceRecipe:
    dataset: str                 # fmnist | cifar10 | cifar10:animals | ... (polarity.data.subsets)
    arch: str = "compact"
    width: float = 0.5           # compact network channel multiplier
    in_size: int = 32            # input side after resizing (grey images become 3 channels)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05             # peak learning rate (after warm-up)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    pad: int = 4                 # random-crop padding in pixels (0: no crop)
    flip: bool = True            # random horizontal flips
    seed: int = 0
    data_root: str | None = None
    data_source: str = "auto"

    def model_kwargs(self) -> dict:
        return {"in_size": int(self.in_size), "width": float(self.width)} if self.arch == "compact" else {}

    def validate(self) -> None:
        if self.arch not in ("compact", "alexnet"):
            raise ValueError(f"unknown arch {self.arch!r}; known: compact, alexnet")
        for f in ("epochs", "batch_size", "in_size"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        for f in ("width", "lr"):
            v = float(getattr(self, f))
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{f} must be a positive finite number, got {v}")
        if not 0 <= self.momentum < 1 or not (self.weight_decay >= 0) or self.pad < 0:
            raise ValueError("momentum must be in [0, 1), weight_decay and pad >= 0")


class Augment:
    """Random crop (zero padding of ``pad`` pixels) and horizontal flip of a float batch,
    vectorised over the batch, drawing from ``generator``."""

    def __init__(self, pad: int, flip: bool, generator: torch.Generator):
        self.pad, self.flip, self.g = int(pad), bool(flip), generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.pad:
            p = self.pad
            xp = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b,), generator=self.g)
            dx = torch.randint(0, 2 * p + 1, (b,), generator=self.g)
            rows = dy[:, None] + torch.arange(h)
            cols = dx[:, None] + torch.arange(w)
            x = xp[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [B,H,W,C]
            x = x.permute(0, 3, 1, 2)
        if self.flip:
            f = torch.rand(b, generator=self.g) < 0.5
            x = torch.where(f[:, None, None, None], x.flip(3), x)
        return x.contiguous()


def _transform_all(tf, x: torch.Tensor, chunk: int = 5000) -> torch.Tensor:
    return torch.cat([tf(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def train_source(recipe: SourceRecipe, log: Callable[[str], None] | None = print,
                 eval_every: int = 5):
    """Train the source network of ``recipe``; returns ``(model, data, metrics)`` where metrics
    holds the test accuracy/loss on the whole test split, the training time and the per-epoch
    history."""
    recipe.validate()
    data = load(recipe.dataset, root=recipe.data_root, source=recipe.data_source)
    tf = data.transform(size=recipe.in_size, rgb=True)
    x, vx = _transform_all(tf, data.train_x), _transform_all(tf, data.test_x)
    y, vy = data.train_y, data.test_y
    model = build_model(recipe.arch, data.num_classes, **recipe.model_kwargs())
    init_glorot_(model, recipe.seed)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.momentum > 0, weight_decay=recipe.weight_decay)
    per_epoch = -(-len(y) // recipe.batch_size)
    total, warm = recipe.epochs * per_epoch, per_epoch

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    opt.register_step_post_hook(lambda *_: sched.step())
    g = torch.Generator().manual_seed(recipe.seed)
    augment = Augment(recipe.pad, recipe.flip, g)
    history, t0 = [], time.perf_counter()
    if log:
        log(f"source {recipe.dataset} ({data.label}): {recipe.arch} width {recipe.width}, "
            f"{len(y)} images, {recipe.epochs} epochs, {torch.get_num_threads()} threads")
    for epoch in range(1, recipe.epochs + 1):
        torch.manual_seed(recipe.seed * 100_003 + epoch)   # dropout masks
        (tl, ta), = fit(model, opt, x, y, augment, [torch.randperm(len(y), generator=g)],
                        recipe.batch_size)
        row = {"epoch": epoch, "train_loss": tl, "train_acc": ta}
        if epoch % eval_every == 0 or epoch == recipe.epochs:
            row["test_loss"], row["test_acc"] = evaluate(model, vx, vy, None)
        history.append(row)
        if log:
            test = f", test acc {row['test_acc']:.4f}" if "test_acc" in row else ""
            log(f"  epoch {epoch}/{recipe.epochs}: loss {tl:.4f}, train acc {ta:.4f}{test} "
                f"({time.perf_counter() - t0:.0f}s)")
    last = history[-1]
    metrics = {"test_accuracy": last["test_acc"], "test_loss": last["test_loss"],
               "test_images": int(len(vy)), "train_images": int(len(y)),
               "train_seconds": round(time.perf_counter() - t0, 1),
               "threads": torch.get_num_threads(), "history": history}
    return model, data, metrics


__all__ = ["SourceRecipe", "Augment", "train_source"]
