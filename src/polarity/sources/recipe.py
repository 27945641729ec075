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
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..data.subsets import load
from ..models import MODELS, head_names, initialised, is_factory, load_factory
from ..template import Template, diagnose
from ..training import evaluate, fit


OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class SourceRecipe:
    dataset: str                 # fmnist | cifar10 | cifar10:animals | ... (polarity.data.subsets)
    arch: str = "compact"        # compact | alexnet | package.module:factory (your own network)
    width: float = 0.5           # compact network channel multiplier
    in_size: int = 32            # input side after resizing (grey images become 3 channels)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05             # peak learning rate (after warm-up)
    momentum: float = 0.9         # SGD's Nesterov momentum; AdamW's beta1
    weight_decay: float = 5e-4    # SGD: L2 in the gradient; AdamW: decoupled (lr * wd per step)
    optimizer: str = "sgd"        # sgd | adamw
    early_weight_decay: float = 0.0   # weight decay of the first early_epochs epochs (erases the init)
    early_epochs: int = 0
    train_n: int = 0              # first n training images (0: the whole training split)
    pad: int = 4                 # random-crop padding in pixels (0: no crop)
    flip: bool = True            # random horizontal flips
    seed: int = 0
    data_root: str | None = None
    data_source: str = "auto"

    def model_kwargs(self) -> dict:
        if self.arch == "compact":
            return {"in_size": int(self.in_size), "width": float(self.width)}
        return {"in_size": int(self.in_size)} if is_factory(self.arch) else {}

    def validate(self) -> None:
        if is_factory(self.arch):
            load_factory(self.arch)  # a ModelError (a ValueError) names what is wrong
        elif self.arch not in MODELS:
            from ..cli_errors import unknown

            raise ValueError(unknown("arch", self.arch, [*MODELS, "package.module:factory"]))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.data_source not in ("auto", "torchvision", "offline"):
            raise ValueError(f"unknown data_source {self.data_source!r}; known: auto, torchvision, offline")
        if int(self.train_n) < 0:
            raise ValueError(f"train_n must be >= 0 (0: the whole training split), got {self.train_n}")
        for f in ("epochs", "batch_size", "in_size"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        for f in ("width", "lr"):
            v = float(getattr(self, f))
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{f} must be a positive finite number, got {v}")
        if not 0 <= self.momentum < 1 or not (self.weight_decay >= 0) or self.pad < 0:
            raise ValueError("momentum must be in [0, 1), weight_decay and pad >= 0")
        if not (0 <= self.early_weight_decay < math.inf) or not 0 <= int(self.early_epochs) <= int(self.epochs):
            raise ValueError("early_weight_decay must be >= 0 and early_epochs in [0, epochs]")


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


def make_optimizer(recipe: SourceRecipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer: SGD with Nesterov momentum and L2 weight decay, or AdamW (betas
    ``(momentum, 0.999)``, decoupled weight decay)."""
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(recipe.momentum, 0.999),
                                 weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.momentum > 0, weight_decay=recipe.weight_decay)


def initial_model(recipe: SourceRecipe, num_classes: int) -> torch.nn.Module:
    """The untrained network of ``recipe``: its architecture with the initialisation its seed
    draws (:func:`polarity.models.initialised`)."""
    return initialised(recipe.arch, num_classes, recipe.seed, **recipe.model_kwargs())


def init_template(model: torch.nn.Module) -> Template:
    """The signs of ``model``'s non-head weights (biases and the new head excluded): the part of a
    source's template whose agreement with its own initialisation says how much was learned."""
    head = set(head_names(model))
    names = [n for n, p in model.named_parameters() if p.dim() > 1 and n not in head]
    return Template.from_module(model, include=names)


def init_agreement(recipe: SourceRecipe, trained, num_classes: int) -> dict:
    """Sign agreement of trained weights (a module or state dict) with the initialisation that
    ``recipe``'s seed draws, recomputed here: ``{"overall": float, "per_layer": {name: float}}``
    over the non-head weights (:func:`polarity.template.diagnose`; entry-weighted overall).
    Independent draws agree at ~0.5; 1.0 means no sign moved."""
    return agreement_with(init_template(initial_model(recipe, num_classes)), trained)


def agreement_with(init: Template, trained) -> dict:
    d = diagnose(init, other=trained)
    return {"overall": d.overall.agreement, "per_layer": {k: v.agreement for k, v in d.tensors.items()}}


def _transform_all(tf, x: torch.Tensor, chunk: int = 5000) -> torch.Tensor:
    return torch.cat([tf(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def train_source(recipe: SourceRecipe, log: Callable[[str], None] | None = print,
                 eval_every: int = 5, on_epoch: Callable[[dict, float], None] | None = None):
    """Train the source network of ``recipe``; returns ``(model, data, metrics)`` where metrics
    holds the test accuracy/loss on the whole test split, the init agreement, the training time
    and the per-epoch history.  ``on_epoch(row, seconds)`` is called after every epoch with its
    history row."""
    recipe.validate()
    data = load(recipe.dataset, root=recipe.data_root, source=recipe.data_source)
    tf = data.transform(size=recipe.in_size, rgb=True)
    n = int(recipe.train_n) or len(data.train_y)
    if n > len(data.train_y):
        raise ValueError(f"train_n={n} but {data.label} has {len(data.train_y)} training images")
    x, vx = _transform_all(tf, data.train_x[:n]), _transform_all(tf, data.test_x)
    y, vy = data.train_y[:n], data.test_y
    model = initial_model(recipe, data.num_classes)
    init_signs = init_template(model)
    opt = make_optimizer(recipe, model)
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
        net = recipe.arch if is_factory(recipe.arch) else f"{recipe.arch} width {recipe.width}"
        log(f"source {recipe.dataset} ({data.label}): {net}, "
            f"{len(y)} images, {recipe.epochs} epochs, {torch.get_num_threads()} threads")
    for epoch in range(1, recipe.epochs + 1):
        for group in opt.param_groups:   # the early phase's weight decay, then the recipe's
            group["weight_decay"] = (recipe.early_weight_decay if epoch <= recipe.early_epochs
                                     else recipe.weight_decay)
        torch.manual_seed(recipe.seed * 100_003 + epoch)   # dropout masks
        (tl, ta), = fit(model, opt, x, y, augment, [torch.randperm(len(y), generator=g)],
                        recipe.batch_size)
        row = {"epoch": epoch, "train_loss": tl, "train_acc": ta,
               "init_agreement": round(agreement_with(init_signs, model)["overall"], 4)}
        if epoch % eval_every == 0 or epoch == recipe.epochs:
            row["test_loss"], row["test_acc"] = evaluate(model, vx, vy, None)
        history.append(row)
        if on_epoch is not None:
            on_epoch(row, time.perf_counter() - t0)
        if log:
            test = f", test acc {row['test_acc']:.4f}" if "test_acc" in row else ""
            log(f"  epoch {epoch}/{recipe.epochs}: loss {tl:.4f}, train acc {ta:.4f}{test}, "
                f"init agreement {row['init_agreement']:.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
    last = history[-1]
    agree = agreement_with(init_signs, model)
    metrics = {"test_accuracy": last["test_acc"], "test_loss": last["test_loss"],
               "test_images": int(len(vy)), "train_images": int(len(y)),
               "train_seconds": round(time.perf_counter() - t0, 1),
               "threads": torch.get_num_threads(),
               "init_agreement": round(agree["overall"], 4),
               "init_agreement_per_layer": {k: round(v, 4) for k, v in agree["per_layer"].items()},
               "history": history}
    return model, data, metrics


def command_for(recipe: SourceRecipe, name: str, out: Path, threads: int) -> str:
    """The explicit command that trains ``recipe`` again (every recipe field spelled out)."""
    def num(v) -> str:   # the shortest text that reads back as the same float
        return repr(float(v)).removesuffix(".0") if float(v).is_integer() else repr(float(v))

    parts = ["polarity", "source", "train", recipe.dataset, "--arch", recipe.arch,
             "--width", num(recipe.width), "--in-size", str(recipe.in_size),
             "--epochs", str(recipe.epochs), "--batch-size", str(recipe.batch_size),
             "--optimizer", recipe.optimizer, "--lr", num(recipe.lr),
             "--momentum", num(recipe.momentum), "--weight-decay", num(recipe.weight_decay),
             "--pad", str(recipe.pad), "--seed", str(recipe.seed), "--threads", str(threads)]
    if recipe.early_epochs:
        parts += ["--early-weight-decay", num(recipe.early_weight_decay),
                  "--early-epochs", str(recipe.early_epochs)]
    if recipe.train_n:
        parts += ["--train-n", str(recipe.train_n)]
    if not recipe.flip:
        parts.append("--no-flip")
    if recipe.data_source != "auto":
        parts += ["--data-source", recipe.data_source]
    parts += ["--name", name, "--out", str(out)]
    return " ".join(shlex.quote(p) for p in parts)


__all__ = ["SourceRecipe", "command_for", "Augment", "train_source", "make_optimizer", "initial_model", "init_template",
           "init_agreement", "agreement_with", "OPTIMIZERS"]
