"""Training primitives shared by the experiments and by source pretraining (:mod:`polarity.transfer`):
the optimizer, one epoch per data permutation, and evaluation."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused where this build supports it for the model's device and dtype."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def fit(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None, perms: Sequence[torch.Tensor],
        batch_size: int, device: str = "cpu",
        on_epoch: Callable[[int, float, float], None] | None = None) -> list[tuple[float, float]]:
    """Train one epoch per permutation; returns (train loss, train acc) per epoch.

    ``x`` is uint8 (transformed per batch by ``transform``) or already float (``transform=None``).
    The running loss/accuracy are accumulated on the device: one host sync per epoch.
    """
    n = len(y)
    out = []
    for e, perm in enumerate(perms, 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        perm = perm.to(x.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx]
            if transform is not None:
                xb = transform(xb)
            yb = y[idx]
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
        tl, ta = float(loss_sum) / n, int(correct) / n
        out.append((tl, ta))
        if on_epoch is not None:
            on_epoch(e, tl, ta)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             transform: Callable[[torch.Tensor], torch.Tensor] | None, device: str = "cpu",
             batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y) in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(y), batch_size):
        xb = x[i:i + batch_size]
        if transform is not None:
            xb = transform(xb)
        xb, yb = xb.to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    n = max(len(y), 1)
    return float(loss_sum) / n, int(correct) / n


__all__ = ["make_optimizer", "fit", "evaluate"]
