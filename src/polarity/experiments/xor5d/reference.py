"""The naive reference: one XOR network trained alone with ``torch.optim.Adam`` and Freeze-SGD.

What the batched trainer must equal, network by network (tests/test_xor_trainer.py), and the
baseline of its speed-up (benchmarks/xor5d.py).
"""
from __future__ import annotations

import numpy as np
import torch

from ...freeze import reset_
from ...freeze.stream import mix32_np

# the layer index of each constrained parameter in a network's posRand stream
_STREAM_LAYER = {"fc1.weight": 0, "fc2.weight": 1}


def train_single(net, x: torch.Tensor, y: torch.Tensor, perms: np.ndarray, template: dict | None,
                 reset: str = "posRand", *, lr: float = 0.03, batch_size: int = 32,
                 betas=(0.9, 0.999), eps: float = 1e-7, reset_eps: float = 1e-3,
                 x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                 generator: torch.Generator | None = None,
                 reset_seed: int | None = None) -> list[tuple[float, float, float, float]]:
    """Train one ``XORNet`` with its own ``torch.optim.Adam`` and, when ``template`` is given
    (``{name: sign tensor}``), a ``reset_`` after every step.  posRand draws: with ``reset_seed``
    the network's own stream, the one ``train_batched`` gives it (``network_reset_seed``; step s
    of parameter fc1.weight/fc2.weight draws from ``mix32(reset_seed, s, 0/1)``), else a seed
    from ``generator`` per step.  ``perms``: ``[epochs, n]`` batch orders.  Returns per-epoch
    (train_loss, train_acc, val_loss, val_acc)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas, eps=eps)
    lossf = torch.nn.BCEWithLogitsLoss()
    params = dict(net.named_parameters())
    tmpl = [(name, params[name], torch.as_tensor(t).to(torch.int8).view_as(params[name]))
            for name, t in (template or {}).items()]
    hist = []
    n = len(y)
    step = 0
    for perm in perms:
        perm = torch.as_tensor(perm)
        tl = ta = 0.0
        for i in range(0, n, batch_size):
            bi = perm[i:i + batch_size]
            xb, yb = x[bi], y[bi]
            opt.zero_grad(set_to_none=True)
            z = net(xb)
            loss = lossf(z, yb)
            loss.backward()
            opt.step()
            step += 1
            for name, p, t in tmpl:
                seed = None if reset_seed is None else int(mix32_np(reset_seed, step, _STREAM_LAYER[name]))
                reset_(p.data, t, reset, reset_eps, generator, seed=seed)
            tl += float(loss.detach()) * len(bi)
            ta += float(((z > 0) == (yb > 0.5)).sum())
        if x_val is not None:
            with torch.no_grad():
                zv = net(x_val)
                vl, va = float(lossf(zv, y_val)), float(((zv > 0) == (y_val > 0.5)).float().mean())
        else:
            vl = va = float("nan")
        hist.append((tl / n, ta / n, vl, va))
    return hist


__all__ = ["train_single"]
