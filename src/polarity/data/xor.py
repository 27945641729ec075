"""The XOR-5D data of the paper's simulation (SPEC §4), nested and deterministic per seed.

Reference generator (``variant="xor"``): ``n`` is floored to a multiple of 4 with ``n/4`` points
per quadrant.  In each of the first two dimensions a coordinate is uniform on ``[-1, 0)`` (negative
side) or on ``[0.05, 1.05)`` (positive side): a 0.05 gap at the axes.  The label is 1 when
``x1 * x2 > 0`` (both coordinates on the same side), else 0.  Dimensions 3..d are noise, i.i.d.
Normal(1, 1).

``variant="gaussian"`` (Gaussian parity, an option): the first two coordinates are drawn around
the quadrant centres ``(±0.5, ±0.5)`` with i.i.d. Normal noise of standard deviation
``gaussian_sd`` (0.25 by default); the label is that of the centre (1 when the centre's signs
agree), so points that cross an axis carry label noise, as in the usual "Gaussian XOR".

Nesting: the training points are laid out with the quadrants interleaved (point ``i`` lies in
quadrant ``i mod 4``, in the order (+,+), (-,-), (-,+), (+,-)), and each coordinate stream is drawn
from its own sequential random stream, so the first ``m`` points never depend on how many points
were generated after them.  The training set of size ``n`` is the prefix of length
``floor(n/4)*4`` of the largest set: a larger set extends every smaller one, and every prefix of a
multiple of 4 has exactly ``n/4`` points per quadrant.  The validation set (1000 points by default)
comes from separate streams of the same seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VARIANTS = ("xor", "gaussian")
# Quadrant sign patterns in interleaving order; labels 1, 1, 0, 0.
_QUADRANTS = np.array([[1, 1], [-1, -1], [-1, 1], [1, -1]], dtype=np.int8)
GAP = 0.05


def floor4(n: int) -> int:
    """The number of points actually used for a requested ``n`` (floored to a multiple of 4)."""
    if n < 4:
        raise ValueError(f"sample size n={n} is too small: XOR needs at least 4 points (one per quadrant)")
    return (int(n) // 4) * 4


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *stream])))


def generate(n: int, seed: int, dim: int = 5, variant: str = "xor", stream: int = 0,
             gaussian_sd: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (floored to a multiple of 4) as ``(x float32 [n, dim], y float32 [n])``.

    Deterministic in (seed, stream); prefix-stable in ``n`` (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown XOR variant {variant!r}; known: {', '.join(VARIANTS)}")
    if dim < 2:
        raise ValueError(f"dim={dim}: XOR needs at least 2 dimensions")
    if not gaussian_sd > 0:
        raise ValueError(f"gaussian_sd must be positive, got {gaussian_sd}")
    n = floor4(n)
    q = _QUADRANTS[np.arange(n) % 4]  # [n, 2] signs
    u = _rng(seed, stream, 1).random((n, 2))  # one row per point, sequential: prefix-stable
    if variant == "xor":
        x12 = np.where(q > 0, u + GAP, u - 1.0)
        y = (q[:, 0] * q[:, 1] > 0)
    else:
        # Gaussian parity: Box-Muller on the same prefix-stable uniform stream pair.
        u2 = _rng(seed, stream, 3).random((n, 2))
        z = np.sqrt(-2.0 * np.log1p(-u)) * np.cos(2.0 * np.pi * u2)
        x12 = 0.5 * q + gaussian_sd * z
        y = (q[:, 0] * q[:, 1] > 0)
    noise = _rng(seed, stream, 2).normal(1.0, 1.0, size=(n, dim - 2))
    x = np.concatenate([x12, noise], axis=1).astype(np.float32)
    return x, y.astype(np.float32)


@dataclass(frozen=True)
class XorTrialData:
    """One trial's data: the largest training set (prefixes give the smaller, nested ones) and
    the validation set."""

    x_train: np.ndarray  # [n_max, dim]
    y_train: np.ndarray  # [n_max]
    x_val: np.ndarray  # [n_val, dim]
    y_val: np.ndarray  # [n_val]

    def train(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        m = floor4(n)
        if m > len(self.y_train):
            raise ValueError(f"n={n} exceeds the {len(self.y_train)} generated training points")
        return self.x_train[:m], self.y_train[:m]


def trial_data(seed: int, n_max: int, n_val: int = 1000, dim: int = 5, variant: str = "xor",
               gaussian_sd: float = 0.25) -> XorTrialData:
    """Training (stream 0, ``n_max`` points) and validation (stream 1, ``n_val`` points) sets."""
    xt, yt = generate(n_max, seed, dim, variant, stream=0, gaussian_sd=gaussian_sd)
    xv, yv = generate(n_val, seed, dim, variant, stream=1, gaussian_sd=gaussian_sd)
    return XorTrialData(xt, yt, xv, yv)


__all__ = ["VARIANTS", "GAP", "floor4", "generate", "trial_data", "XorTrialData"]
