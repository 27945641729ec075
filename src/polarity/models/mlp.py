"""The XOR-5D network of SPEC §4 as a plain ``nn.Module``, and its Keras-style initialisation.

``Dense(d -> H, ReLU) -> Dense(H -> 1, sigmoid)``, both with biases.  The module returns the
*logit*; train it with ``BCEWithLogitsLoss`` (mathematically the binary cross-entropy of the
sigmoid output, computed stably) and use ``predict_proba`` for probabilities.

Initialisation (Keras defaults of the reference): kernels ``TruncatedNormal(0, 0.25)`` truncated
at two standard deviations (values outside ±0.5 are redrawn); biases ``GlorotUniform`` in the
Keras sense, which for a bias of length ``k`` means fan_in = fan_out = k, i.e.
``U(-sqrt(3/k), sqrt(3/k))``.  ``init_params(seed, width)`` draws them with numpy from a stream
of its own (deterministic in (seed, width, dim)), so every condition of a trial — and the batched
trainer — can start from exactly the same numbers.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

KERNEL_SD = 0.25


def truncated_normal(rng: np.random.Generator, shape, sd: float = KERNEL_SD) -> np.ndarray:
    """Normal(0, sd) with every value outside ±2 sd redrawn (Keras ``TruncatedNormal``)."""
    out = rng.normal(0.0, sd, size=shape)
    bad = np.abs(out) > 2 * sd
    while bad.any():
        out[bad] = rng.normal(0.0, sd, size=int(bad.sum()))
        bad = np.abs(out) > 2 * sd
    return out


def glorot_uniform_bias(rng: np.random.Generator, k: int) -> np.ndarray:
    """Keras GlorotUniform applied to a bias of length k: U(-sqrt(3/k), sqrt(3/k))."""
    lim = math.sqrt(3.0 / k)  # sqrt(6 / (fan_in + fan_out)) with fan_in = fan_out = k
    return rng.uniform(-lim, lim, size=(k,))


def init_params(seed: int, width: int, dim: int = 5) -> dict[str, np.ndarray]:
    """The initial parameters of one network, keyed like ``XORNet``'s state dict (float32,
    ``fc1.weight`` is ``[width, dim]`` as in ``nn.Linear``)."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 7, int(width), int(dim)])))
    w1 = truncated_normal(rng, (dim, width)).T  # drawn in Keras' [in, out] kernel layout
    b1 = glorot_uniform_bias(rng, width)
    w2 = truncated_normal(rng, (width, 1)).T
    b2 = glorot_uniform_bias(rng, 1)
    return {k: np.ascontiguousarray(v, dtype=np.float32)
            for k, v in (("fc1.weight", w1), ("fc1.bias", b1), ("fc2.weight", w2), ("fc2.bias", b2))}


class XORNet(nn.Module):
    """``Linear(dim, width) -> ReLU -> Linear(width, 1)``; ``forward`` returns logits ``[batch]``."""

    def __init__(self, width: int = 64, dim: int = 5, seed: int | None = None):
        super().__init__()
        self.width, self.dim = width, dim
        self.fc1 = nn.Linear(dim, width)
        self.fc2 = nn.Linear(width, 1)
        if seed is not None:
            self.load_init(seed)

    def load_init(self, seed: int) -> "XORNet":
        """Set the parameters to ``init_params(seed, width, dim)``."""
        sd = {k: torch.from_numpy(v) for k, v in init_params(seed, self.width, self.dim).items()}
        self.load_state_dict(sd)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x))).squeeze(-1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward(x))


__all__ = ["XORNet", "init_params", "truncated_normal", "glorot_uniform_bias", "KERNEL_SD"]
