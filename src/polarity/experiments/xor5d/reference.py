"""The naive reference: one XOR network trained alone with ``torch.optim.Adam`` and the library's
``Freezer``.

What the batched trainer must equal, network by network (tests/test_xor_trainer.py), and the
baseline of its speed-up (benchmarks/xor5d.py).
"""
from __future__ import annotations

import numpy as np
import torch

from ...freeze import Freezer
from ...template import Template


def train_single(net, x: torch.Tensor, y: torch.Tensor, perms: np.ndarray, template: dict | None,
                 reset: str = "posRand", *, lr: float = 0.03, batch_size: int = 32,
                 betas=(0.9, 0.999), eps: float = 1e-7, reset_eps: float = 1e-3,
                 x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                 reset_seed: int | None = None) -> list[tuple[float, float, float, float]]:
    """Train one ``XORNet`` with its own ``torch.optim.Adam`` and, when ``template`` is given
    (``{name: sign tensor}`` for fc1.weight and fc2.weight), a ``Freezer`` attached to it.
    posRand draws: the Freezer's seed is ``reset_seed``, the network's own stream, the one
    ``train_batched`` gives it (``network_reset_seed``; parameter 0 = fc1.weight, 1 = fc2.weight
    at step s draw from ``parameter_step_seed(reset_seed, s, 0/1)``, the one seed rule), or one
    from torch's global generator when None.  ``perms``: ``[epochs, n]`` batch orders.  Returns
    per-epoch (train_loss, train_acc, val_loss, val_acc)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas, eps=eps)
    if template:
        names = [name for name, _ in net.named_parameters() if name in template]  # module order
        signs = Template({name: torch.as_tensor(template[name]) for name in names})
        Freezer(net, signs, reset=reset, eps=reset_eps, seed=reset_seed).attach(opt)
    lossf = torch.nn.BCEWithLogitsLoss()
    hist = []
    n = len(y)
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
            opt.step()  # the Freezer's reset runs in the step's post-hook
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
