"""``xor5d``: the XOR-5D simulation of the paper (Figures 1, 4 and C.1; SPEC §4, §6).

Protocol (SPEC §4, reference defaults)
--------------------------------------
* Data: ``polarity.data.xor`` (nested training sets, 1000 validation points, one trial seed
  ``trial_seed(hp.seed, trial)`` for the data, the initialisation and the batch order).
* Network: ``Dense(5 -> H, ReLU) -> Dense(H -> 1, sigmoid)`` with the Keras initialisation of
  ``polarity.models.mlp.init_params`` (one draw per (trial, width), shared by every condition and
  every sample size of the trial).
* Loss: binary cross-entropy, computed from the logit (``softplus(z) - y z``), which is the BCE of
  the sigmoid output without its float saturation; Keras clips probabilities at 1e-7 instead.
* Adam(lr 0.03, beta1 0.9, beta2 0.999, eps 1e-7 = Keras' default eps), batch 32 with the last
  partial batch kept (as Keras), 100 epochs.  ``eps_mode="torch"`` (default) applies eps exactly as
  ``torch.optim.Adam`` does (``m_hat / (sqrt(v_hat) + eps)``), so the batched trainer equals
  ``torch.optim.Adam(eps=1e-7)`` network by network; ``eps_mode="keras"`` applies it as Keras'
  "epsilon hat" (``lr_t m / (sqrt(v) + eps)``, i.e. torch's eps divided by ``sqrt(1-beta2^t)``).
  The two differ only while ``sqrt(v)`` is of the order of 1e-7.
* Shuffle: a fresh uniform permutation of the n training points every epoch (Keras
  ``fit(shuffle=True)`` / the reference's ``tf.data.shuffle(buffer=n)``), drawn from a stream of the
  trial seed and n, so every condition (and width) of a trial sees the same batches.
* Per epoch the validation pass runs over the 1000 points; train loss/accuracy are Keras-style:
  the sample-weighted mean over the epoch's batches, each measured before its update.

Conditions
----------
``frozen-sufficient``, ``frozen-rand``, ``fluid-rand``, ``fluid-sufficient``, each optionally with
``@<reset>`` (``posCon``, ``posRand``, ``zero``, ``flip``; default ``hp.reset`` = posRand), e.g.
``frozen-rand@flip``.  Templates constrain both kernels (``fc1.weight``, ``fc2.weight``); biases
are free.  ``rand``: the signs of the network's own initialisation (SPEC §2), so frozen-rand starts
exactly at the shared initialisation.  ``sufficient``: the first layer keeps its initial signs and
output weight j gets ``sign(w1[j,0] * w1[j,1])``; the shared initialisation is made compliant by
flipping (so every condition has the same magnitudes).  ``fluid-sufficient`` starts there but
trains freely.  Frozen conditions apply ``polarity.freeze.reset_`` after every Adam step.

Batched trainer
---------------
A job is a set of *groups* (trial, n) times a set of *columns* (condition, width); every network
of the job trains in one program over a network axis.  Parameters, Adam moments and gradients
live in flat buffers with a [group, column, ...] layout.  Two interchangeable paths:

* ``fused`` (default on CPU; numba): one kernel call per optimizer step runs, for every network,
  the forward pass, the hand-written backward pass of the batch-mean BCE and the Adam update
  (``torch.optim.Adam``'s single-tensor arithmetic, bias corrections computed in float64 on the
  host as torch does); one kernel call per epoch runs every network's validation pass (logits,
  BCE, accuracy).  Loops vectorise over samples / hidden units.  In float32 runs the sigmoid of
  the training step and the BCE use a vectorised float32 exp/log (relative error < 1e-7, below
  float32 resolution); float64 runs use libm's exp for the step (that is what the exactness
  tests use).
* ``torch`` (any device, e.g. CUDA; ``fused=False``): the same step as batched ``matmul``s and
  elementwise ops over the [group, column] axes.

Either way, per step: a host-built index table gives every group its batch (no host syncs in the
loop); groups with fewer batches per epoch sit out (masked) the steps they don't have, and their
parameters, moments and Adam step count stay untouched, so every network follows exactly its own
``torch.optim.Adam`` trajectory (tests: float64, 1e-9).  Columns narrower than the job's width
are zero-padded: padded units have zero weights, gradients and moments, stay exactly zero and are
skipped by the kernels.  After every step the Freeze-SGD reset runs on every frozen network
(template 0 for fluid columns and padding).  Records stay on the device and reach the host once
per job.  ``jobs()`` groups networks by batches-per-epoch and by width bucket (``merge_ratio``)
so that masking and padding waste little.

Every network's numbers depend only on its own (trial, n, width, condition), never on the job it
was batched into: posRand draws (values in (0, 1e-3]) come from the network's own counter-based
stream (``network_reset_seed``, the optimizer step and the entry's index in its nn.Linear
weight), so a network trained alone with ``train_single(reset_seed=...)`` matches its batched
twin exactly, posRand included (tests: float64, 1e-9), on the numba kernels and on the torch
path alike (the torch path computes the same hash in integer tensor ops).
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import register
from .base import (EpochRecord, Experiment, ExperimentError, Job, TrialKey, TrialResult,
                   gc_paused, trial_seed)

FIG1_N = (8, 20, 32, 40, 52, 60, 72, 80, 92, 100, 500)
FIG4_WIDTHS = tuple(range(2, 30)) + (30, 32, 48, 64)
BASE_CONDITIONS = ("frozen-sufficient", "frozen-rand", "fluid-rand", "fluid-sufficient")
RESET_METHODS = ("posCon", "posRand", "zero", "flip")
PARAM_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


def _tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


@dataclass(frozen=True)
class XorHparams:
    conditions: tuple[str, ...] = ("frozen-sufficient", "frozen-rand", "fluid-rand")
    sample_sizes: tuple[int, ...] = FIG1_N
    widths: tuple[int, ...] = (64,)
    trials: int = 50
    epochs: int = 100
    lr: float = 0.03
    batch_size: int = 32
    seed: int = 0
    cutoffs: tuple[float, ...] = (0.9,)
    threads: int = 1
    reset: str = "posRand"  # default reset method of frozen conditions without '@method'
    reset_eps: float = 1e-3
    variant: str = "xor"  # "xor" (reference generator) | "gaussian" (Gaussian parity)
    gaussian_sd: float = 0.25
    dim: int = 5
    n_val: int = 1000
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-7  # Keras' default
    eps_mode: str = "torch"  # "torch" | "keras" (see module docstring)
    sign_switch: bool = False  # record per-epoch sign-switch fractions (extra metrics)
    dtype: str = "float32"
    max_job_networks: int = 0  # 0: no cap; else split groups so a job holds at most this many
    merge_ratio: float = 1.25  # jobs merge widths / batches-per-epoch within this ratio (padding, masks)

    def __post_init__(self):
        for f in ("conditions", "sample_sizes", "widths", "cutoffs"):
            object.__setattr__(self, f, _tuple(getattr(self, f)))


# ----------------------------------------------------------------------------- conditions
@dataclass(frozen=True)
class Condition:
    name: str
    frozen: bool
    template: str  # "rand" | "sufficient"
    reset: str


def parse_condition(name: str, default_reset: str = "posRand") -> Condition:
    base, _, method = name.partition("@")
    if base not in BASE_CONDITIONS:
        raise ExperimentError(f"unknown xor5d condition {name!r}; known: {', '.join(BASE_CONDITIONS)}"
                              f" (optionally '@<reset>' with reset in {', '.join(RESET_METHODS)})")
    method = method or default_reset
    if method not in RESET_METHODS:
        raise ExperimentError(f"unknown reset method {method!r} in condition {name!r}; "
                              f"known: {', '.join(RESET_METHODS)}")
    if "@" in name and base.startswith("fluid"):
        raise ExperimentError(f"condition {name!r}: a fluid condition has no reset method")
    return Condition(name, base.startswith("frozen"), base.split("-", 1)[1], method)


# ----------------------------------------------------------------------------- randomness
def _stream_seed(*parts: Any) -> int:
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def network_reset_seed(seed: int, trial: int, n: int, condition: str, width: int) -> int:
    """The posRand seed of one network: a function of its own key only, never of its job."""
    return _stream_seed("xor5d/posRand", int(seed), int(trial), int(n), str(condition), int(width)) & 0xFFFFFFFF


def epoch_permutations(seed: int, n: int, epochs: int) -> np.ndarray:
    """The batch order of a (trial seed, n): one uniform permutation of ``range(n)`` per epoch,
    ``[epochs, n]``.  Shared by every condition and width of the trial."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 11, int(n)])))
    return np.argsort(rng.random((epochs, n)), axis=1, kind="stable")


def initial_state(seed: int, width: int, condition: Condition, dim: int = 5,
                  params: dict | None = None) -> tuple[dict, dict]:
    """The starting parameters and template of one network (numpy float32 arrays, nn.Linear
    layout).  Template: ``{}`` for fluid conditions, else signs for fc1.weight and fc2.weight.
    ``params``: ``init_params(seed, width, dim)`` when the caller already has it (not modified)."""
    from ..models.mlp import init_params

    if params is None:
        params = init_params(seed, width, dim)
    p = {k: v.copy() for k, v in params.items()}
    t1 = np.sign(p["fc1.weight"])
    if condition.template == "sufficient":
        t2 = np.sign(p["fc1.weight"][:, 0] * p["fc1.weight"][:, 1])[None, :]
        # make the shared init compliant by flipping (magnitudes unchanged)
        p["fc2.weight"] = np.where(p["fc2.weight"] * t2 < 0, -p["fc2.weight"], p["fc2.weight"])
    else:
        t2 = np.sign(p["fc2.weight"])
    tmpl = {"fc1.weight": t1.astype(np.int8), "fc2.weight": t2.astype(np.int8)} if condition.frozen else {}
    return p, tmpl


# ----------------------------------------------------------------------------- fused CPU kernels
# Parameters live in a "transposed" layout: fc1.weight as W1T [G, C, d, Hp], b1 and w2 [G, C, Hp],
# b2 [G, C].  For one network (g, c), W1T[g, c] is a C-contiguous [d, Hp] matrix whose rows run
# over the hidden units, which is what the kernels vectorise over.
try:
    import numba as _nb

    from .. import _kernels
    from .._kernels import f32_from_bits

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False

if HAVE_NUMBA:

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
    def _logits_one(xt, w1t, b1, w2, b2, width, z):
        # xt [d, nv] (samples contiguous, so the sample loop vectorises); w1t [d, Hp];
        # only the first ``width`` (real) hidden units are visited
        d, nv = xt.shape
        zero = z.dtype.type(0)
        for i in range(nv):
            z[i] = b2
        j = 0
        if d == 5:
            x0, x1, x2, x3, x4 = xt[0], xt[1], xt[2], xt[3], xt[4]
            while j + 4 <= width:  # four hidden units per pass over the samples
                c0, c1, c2, c3 = b1[j], b1[j + 1], b1[j + 2], b1[j + 3]
                v0, v1, v2, v3 = w2[j], w2[j + 1], w2[j + 2], w2[j + 3]
                p00, p01, p02, p03 = w1t[0, j], w1t[0, j + 1], w1t[0, j + 2], w1t[0, j + 3]
                p10, p11, p12, p13 = w1t[1, j], w1t[1, j + 1], w1t[1, j + 2], w1t[1, j + 3]
                p20, p21, p22, p23 = w1t[2, j], w1t[2, j + 1], w1t[2, j + 2], w1t[2, j + 3]
                p30, p31, p32, p33 = w1t[3, j], w1t[3, j + 1], w1t[3, j + 2], w1t[3, j + 3]
                p40, p41, p42, p43 = w1t[4, j], w1t[4, j + 1], w1t[4, j + 2], w1t[4, j + 3]
                for i in range(nv):
                    e0, e1, e2, e3, e4 = x0[i], x1[i], x2[i], x3[i], x4[i]
                    a0 = c0 + e0 * p00 + e1 * p10 + e2 * p20 + e3 * p30 + e4 * p40
                    a1 = c1 + e0 * p01 + e1 * p11 + e2 * p21 + e3 * p31 + e4 * p41
                    a2 = c2 + e0 * p02 + e1 * p12 + e2 * p22 + e3 * p32 + e4 * p42
                    a3 = c3 + e0 * p03 + e1 * p13 + e2 * p23 + e3 * p33 + e4 * p43
                    z[i] += (v0 * max(a0, zero) + v1 * max(a1, zero)) + (v2 * max(a2, zero) + v3 * max(a3, zero))
                j += 4
            while j < width:  # the remaining units one at a time
                bj, vj = b1[j], w2[j]
                u0, u1, u2, u3, u4 = w1t[0, j], w1t[1, j], w1t[2, j], w1t[3, j], w1t[4, j]
                for i in range(nv):
                    a = bj + x0[i] * u0 + x1[i] * u1 + x2[i] * u2 + x3[i] * u3 + x4[i] * u4
                    z[i] += vj * max(a, zero)
                j += 1
        while j < width:
            bj, vj = b1[j], w2[j]
            for i in range(nv):
                a = bj
                for k in range(d):
                    a += xt[k, i] * w1t[k, j]
                z[i] += vj * max(a, zero)
            j += 1

    _F32 = np.float32
    _LOG2E = np.float32(1.4426950408889634)
    _LN2_HI = np.float32(0.693145751953125)
    _LN2_LO = np.float32(1.428606765330187e-06)

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy", inline="always")
    def _exp_neg_abs1(v):
        # exp(-|v|) in float32: range reduction, degree-7 polynomial (relative error < 1e-7) and
        # the power of two built from its bits; no libm call, so loops using it vectorise
        x = -min(abs(_F32(v)), _F32(80.0))
        k = np.floor(x * _LOG2E + _F32(0.5))
        r = x - k * _LN2_HI - k * _LN2_LO
        p = _F32(1.0) + r * (_F32(1.0) + r * (_F32(0.5) + r * (_F32(1 / 6) + r * (_F32(1 / 24) + r * (
            _F32(1 / 120) + r * (_F32(1 / 720) + r * _F32(1 / 5040)))))))
        return p * f32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy", inline="always")
    def _bce1(z, y):
        # BCE(logit z, label y) = softplus(-u), u = (2y - 1) z: relu(-u) + log1p(t), t = exp(-|u|)
        # in (0, 1], log1p(t) = 2 atanh(t / (2 + t)) by its series
        u = (_F32(2.0) * _F32(y) - _F32(1.0)) * _F32(z)
        t = _exp_neg_abs1(u)
        q = t / (_F32(2.0) + t)
        q2 = q * q
        lg = _F32(2.0) * q * (_F32(1.0) + q2 * (_F32(1 / 3) + q2 * (_F32(1 / 5) + q2 * (_F32(1 / 7) + q2 * (
            _F32(1 / 9) + q2 * (_F32(1 / 11) + q2 * (_F32(1 / 13) + q2 * _F32(1 / 15))))))))
        return max(-u, _F32(0.0)) + lg

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
    def _bce_hits(z, y, n, tb):
        """(sum over i < n of BCE(logit z_i, label y_i), number of i with sign(z_i) matching
        y_i): float32 terms (through the scratch ``tb``), float64 sum.  Vectorises: numba's
        error_model="numpy" drops the division-by-zero branch, the count is an int32."""
        h = np.int32(0)
        for i in range(n):
            zi, yi = z[i], y[i]
            tb[i] = _bce1(zi, yi)
            h = np.int32(h + ((zi > 0) == (yi > 0.5)))
        s = 0.0
        for i in range(n):
            s += tb[i]
        return s, h

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
    def _val_one(xt, y, w1t, b1, w2, b2, width, z, tb, out):
        _logits_one(xt, w1t, b1, w2, b2, width, z)
        nv = z.shape[0]
        loss, hits = _bce_hits(z, y, nv, tb)
        out[0] = loss / nv
        out[1] = hits / nv

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
    def _val_serial(xt, y, w1t, b1, w2, b2, widths, out):
        """Validation loss and accuracy of every network: out [2, G, C]."""
        G, C = b2.shape
        nv = xt.shape[2]
        z = np.empty(nv, dtype=b1.dtype)
        tb = np.empty(nv, dtype=np.float32)
        o = np.empty(2, dtype=np.float64)
        for g in range(G):
            for c in range(C):
                _val_one(xt[g], y[g], w1t[g, c], b1[g, c], w2[g, c], b2[g, c], widths[c], z, tb, o)
                out[0, g, c] = o[0]
                out[1, g, c] = o[1]

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy", parallel=True)
    def _val_parallel(xt, y, w1t, b1, w2, b2, widths, out):
        G, C = b2.shape
        nv = xt.shape[2]
        for gc in _nb.prange(G * C):
            g, c = gc // C, gc % C
            z = np.empty(nv, dtype=b1.dtype)
            tb = np.empty(nv, dtype=np.float32)
            o = np.empty(2, dtype=np.float64)
            _val_one(xt[g], y[g], w1t[g, c], b1[g, c], w2[g, c], b2[g, c], widths[c], z, tb, o)
            out[0, g, c] = o[0]
            out[1, g, c] = o[1]

    @_nb.njit(cache=True, nogil=True)
    def _train_loss(zt, ys, gn, out):
        """Epoch train loss per network from the logits recorded during the epoch:
        zt [G, C, S*B], ys [G, S*B] (labels in the same order), gn [G] valid samples."""
        G, C, L = zt.shape
        tb = np.empty(L, dtype=np.float32)
        for g in range(G):
            for c in range(C):
                out[g, c] = _bce_hits(zt[g, c], ys[g], gn[g], tb)[0] / gn[g]

    @_nb.njit(cache=True, nogil=True)
    def _reset_nets(W1T, W2, T1, T2, codes, eps, seeds, steps):
        """The Freeze-SGD reset of every frozen column (``codes[c]`` >= 0) of every group, each
        network with its own posRand stream: after its step ``steps[g]``, fc1.weight entry (j, k)
        draws from (mix32(seed, step, 0), j*d + k) and fc2.weight entry j from
        (mix32(seed, step, 1), j), exactly as ``_kernels.reset_range`` on the network's own
        nn.Linear weights does (``train_single(reset_seed=)``).  Padding has template 0."""
        G, C, d, Hp = W1T.shape
        zero = W1T.dtype.type(0)
        for g in range(G):
            for c in range(C):
                code = codes[c]
                if code < 0:
                    continue
                s1 = _kernels.mix32(seeds[g, c], steps[g], 0)
                s2 = _kernels.mix32(seeds[g, c], steps[g], 1)
                for k in range(d):
                    for j in range(Hp):
                        wi = W1T[g, c, k, j]
                        tf = W1T.dtype.type(T1[g, c, k, j])
                        if wi * tf < 0:
                            W1T[g, c, k, j] = _kernels.reset_value(code, wi, tf, eps, zero, s1, j * d + k)
                for j in range(Hp):
                    wi = W2[g, c, j]
                    tf = W2.dtype.type(T2[g, c, j])
                    if wi * tf < 0:
                        W2[g, c, j] = _kernels.reset_value(code, wi, tf, eps, zero, s2, j)

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy", inline="always")
    def _adam_group(P, M, V, GR, offs, G, g, s):
        """torch.optim.Adam (single tensor) on group g's slice of every parameter block of the
        flat buffers: m.lerp_(g, 1-b1); v.mul_(b2).addcmul_(g, g, 1-b2);
        p.addcdiv_(m, sqrt(v)/bc2s + eps, value=-ss).  Padding has zero gradient, so it stays 0."""
        ss, bc2s, eps, omb1, b2_, omb2 = s[1], s[2], s[3], s[4], s[5], s[6]
        for b in range(4):
            per = (offs[b + 1] - offs[b]) // G
            lo = offs[b] + g * per
            p, m, v, gr = P[lo:lo + per], M[lo:lo + per], V[lo:lo + per], GR[lo:lo + per]
            for i in range(per):
                gi = gr[i]
                mi = m[i] + omb1 * (gi - m[i])
                vi = v[i] * b2_ + omb2 * gi * gi
                m[i] = mi
                v[i] = vi
                p[i] = p[i] - ss * (mi / (math.sqrt(vi) / bc2s + eps))

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy", inline="always")
    def _net_grads(g, c, W1T, B1, W2, B2, GW1, GB1, GW2, GB2, xT, yb, cnt, A, zb, db, tb, H,
                   inv, width, ZO, exact_exp):
        """Forward and backward of network (g, c) on its batch (gathered into xT [d, B] and
        yb [B]): the gradients of the batch-mean BCE go to GW1[g, c], GB1[g, c], GW2[g, c] and
        GB2[g, c] (only the first ``width`` units), the logits to ZO[g, c]; returns #correct.
        Vectorised over the samples; arrays are indexed in place (no views: creating a numba
        view costs as much as the arithmetic of a narrow network).  Scratch: A [Hp, B], zb, db,
        H [B] (parameter dtype), tb [B] float32."""
        d = xT.shape[0]
        zero = B1.dtype.type(0)
        b2v = B2[g, c]
        for i in range(cnt):
            zb[i] = b2v
        for j in range(width):  # forward: A = pre-activations, zb = logits
            bj, vj = B1[g, c, j], W2[g, c, j]
            if d == 5:  # the XOR-5D case in one pass over the samples
                u0, u1, u2 = W1T[g, c, 0, j], W1T[g, c, 1, j], W1T[g, c, 2, j]
                u3, u4 = W1T[g, c, 3, j], W1T[g, c, 4, j]
                for i in range(cnt):
                    a = (bj + xT[0, i] * u0 + xT[1, i] * u1 + xT[2, i] * u2 + xT[3, i] * u3
                         + xT[4, i] * u4)
                    A[j, i] = a
                    zb[i] += vj * max(a, zero)
            else:
                for i in range(cnt):
                    A[j, i] = bj
                for k in range(d):
                    u = W1T[g, c, k, j]
                    for i in range(cnt):
                        A[j, i] += xT[k, i] * u
                for i in range(cnt):
                    zb[i] += vj * max(A[j, i], zero)
        hits = 0
        if exact_exp:  # libm exp (float64 runs, checked against torch to 1e-9)
            for i in range(cnt):
                z = zb[i]
                y = yb[i]
                ZO[g, c, i] = z
                hits += (z > 0) == (y > 0.5)
                db[i] = (1.0 / (1.0 + math.exp(-z)) - y) * inv
        else:  # vectorised float32 exp: sigmoid(z) = 1/(1+t) or t/(1+t), t = exp(-|z|)
            for i in range(cnt):
                tb[i] = _exp_neg_abs1(zb[i])
            for i in range(cnt):
                z = zb[i]
                y = yb[i]
                ZO[g, c, i] = z
                hits += (z > 0) == (y > 0.5)
                t = tb[i]
                s = (_F32(1.0) if z >= 0 else t) / (_F32(1.0) + t)
                db[i] = (s - y) * inv
        s2 = zero
        for i in range(cnt):
            s2 += db[i]
        GB2[g, c] = s2
        for j in range(width):  # backward
            vj = W2[g, c, j]
            sw = zero
            sb = zero
            if d == 5:
                s0 = s1 = s2 = s3 = s4 = zero
                for i in range(cnt):
                    a = A[j, i]
                    dz = db[i]
                    h = dz * vj if a > zero else zero
                    sw += dz * max(a, zero)
                    sb += h
                    s0 += xT[0, i] * h
                    s1 += xT[1, i] * h
                    s2 += xT[2, i] * h
                    s3 += xT[3, i] * h
                    s4 += xT[4, i] * h
                GW1[g, c, 0, j] = s0
                GW1[g, c, 1, j] = s1
                GW1[g, c, 2, j] = s2
                GW1[g, c, 3, j] = s3
                GW1[g, c, 4, j] = s4
            else:
                for i in range(cnt):
                    a = A[j, i]
                    dz = db[i]
                    h = dz * vj if a > zero else zero
                    H[i] = h
                    sw += dz * max(a, zero)
                    sb += h
                for k in range(d):
                    sk = zero
                    for i in range(cnt):
                        sk += xT[k, i] * H[i]
                    GW1[g, c, k, j] = sk
            GW2[g, c, j] = sw
            GB1[g, c, j] = sb
        return hits

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy", inline="always")
    def _gather(xs, ys, rows, cnt, xT, yb):
        for i in range(cnt):
            r = rows[i]
            for k in range(xs.shape[1]):
                xT[k, i] = xs[r, k]
            yb[i] = ys[r]

    @_nb.njit(cache=True, nogil=True)
    def _scratch(d, Hp, B, dtype_like):
        dt = dtype_like.dtype
        return (np.empty((d, B), dtype=dt), np.empty(B, dtype=dt), np.empty((Hp, B), dtype=dt),
                np.empty(B, dtype=dt), np.empty(B, dtype=dt), np.empty(B, dtype=np.float32),
                np.empty(B, dtype=dt))

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy", inline="always")
    def _group_step(xs, ys, rows, cnt, W1T, B1, W2, B2, GW1, GB1, GW2, GB2, sc, widths, ZO, hits,
                    exact_exp, g, xT, yb, A, zb, db, tb, H):
        # the batch of group g is gathered once for all its columns
        _gather(xs, ys, rows[g], cnt[g], xT, yb)
        for c in range(W1T.shape[1]):
            hits[g, c] += _net_grads(g, c, W1T, B1, W2, B2, GW1, GB1, GW2, GB2, xT, yb, cnt[g], A,
                                     zb, db, tb, H, sc[g, 0], widths[c], ZO, exact_exp)

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
    def _step_serial(xs, ys, rows, cnt, W1T, B1, W2, B2, GW1, GB1, GW2, GB2, P, M, V, GR, offs,
                     sc, widths, ZO, hits, exact_exp):
        """One Adam step of every network: groups with cnt[g] == 0 (no batch left this epoch)
        are skipped.  W1T.. are views of the flat parameter buffer P, GW1.. of the gradient GR."""
        G, C, d, Hp = W1T.shape
        xT, yb, A, zb, db, tb, H = _scratch(d, Hp, rows.shape[1], B1)
        for g in range(G):
            if cnt[g] > 0:
                _group_step(xs, ys, rows, cnt, W1T, B1, W2, B2, GW1, GB1, GW2, GB2, sc, widths, ZO,
                            hits, exact_exp, g, xT, yb, A, zb, db, tb, H)
                _adam_group(P, M, V, GR, offs, G, g, sc[g])

    @_nb.njit(cache=True, fastmath=True, nogil=True, error_model="numpy", parallel=True)
    def _step_parallel(xs, ys, rows, cnt, W1T, B1, W2, B2, GW1, GB1, GW2, GB2, P, M, V, GR, offs,
                       sc, widths, ZO, hits, exact_exp):
        G, C, d, Hp = W1T.shape
        for g in _nb.prange(G):
            if cnt[g] > 0:
                xT, yb, A, zb, db, tb, H = _scratch(d, Hp, rows.shape[1], B1)
                _group_step(xs, ys, rows, cnt, W1T, B1, W2, B2, GW1, GB1, GW2, GB2, sc, widths, ZO,
                            hits, exact_exp, g, xT, yb, A, zb, db, tb, H)
                _adam_group(P, M, V, GR, offs, G, g, sc[g])


# ----------------------------------------------------------------------------- batched trainer
@dataclass
class BatchedResult:
    """Per-epoch records ``[epochs, groups, columns]`` and final parameters (host tensors)."""

    train_loss: torch.Tensor
    train_acc: torch.Tensor
    val_loss: torch.Tensor
    val_acc: torch.Tensor
    switch: torch.Tensor | None  # [epochs, 2, groups, columns] or None
    params: dict[str, torch.Tensor]  # fc1.weight [G,C,Hp,d], fc1.bias [G,C,Hp], fc2.weight [G,C,Hp], fc2.bias [G,C]
    violations: torch.Tensor | None = None  # [steps] total template violations after each step (check mode)
    fused: bool = False  # which path ran (numba kernels or torch ops)


def _reset_streams_(w: torch.Tensor, t: torch.Tensor, method: str, eps: float, seed: torch.Tensor,
                    index: torch.Tensor) -> None:
    """The Freeze-SGD reset in torch ops with per-network posRand streams (``seed`` and
    ``index`` broadcast against ``w``): the values ``_reset_nets`` gives, on any device."""
    from .. import _kernels

    tf = t.to(w.dtype)
    viol = (w * tf) < 0
    if method == "posCon":
        new = tf * eps
    elif method == "posRand":
        new = tf * eps * _kernels.uniform_torch(seed, index)
    elif method == "zero":
        new = torch.zeros((), dtype=w.dtype, device=w.device)
    else:
        new = -w
    w.copy_(torch.where(viol, new, w))


def _softplus_neg(u: torch.Tensor) -> torch.Tensor:
    """``softplus(-u) = relu(-u) + log(1 + exp(-|u|))`` (the BCE of logit z with u = (2y-1) z)."""
    return torch.log(torch.exp(-u.abs()).add_(1)).add_((-u).clamp_min_(0))


def train_batched(
    x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
    group_trial: Sequence[int], group_n: Sequence[int], perms: Sequence[np.ndarray],
    init: dict[str, torch.Tensor], templates: dict[str, torch.Tensor], column_reset: Sequence[str | None],
    widths: Sequence[int], *, epochs: int, lr: float = 0.03, batch_size: int = 32,
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-7, eps_mode: str = "torch",
    reset_eps: float = 1e-3, generator: torch.Generator | None = None, sign_switch: bool = False,
    check_violations: bool = False, fused: bool | None = None, reset_seeds: np.ndarray | None = None,
) -> BatchedResult:
    """Train ``G x C`` networks at once.

    ``x_train [T, n_max, d]``, ``y_train [T, n_max]``, ``x_val [T, n_val, d]``, ``y_val [T, n_val]``:
    per-trial data; group g uses trial ``group_trial[g]``, the first ``group_n[g]`` points and the
    batch order ``perms[g]`` (``[epochs, n]``).  ``init``: ``fc1.weight [G,C,Hp,d]``,
    ``fc1.bias [G,C,Hp]``, ``fc2.weight [G,C,Hp]``, ``fc2.bias [G,C]`` (zero beyond each column's
    width).  ``templates``: ``fc1.weight``/``fc2.weight`` int8 sign tensors of the same shapes (0 =
    free: fluid columns and padding).  ``column_reset[c]``: the reset method of column c (None for
    fluid).  ``widths[c]``: the true width of column c.  ``fused``: use the numba kernels (CPU,
    float32/float64; default when available) or the torch ops (any device).  ``reset_seeds``
    ``[G, C]``: each network's posRand seed on the fused path (as ``train_single(reset_seed=)``;
    drawn from ``generator`` when None); the torch path draws from ``generator``.
    """
    from .. import _kernels
    from ..freeze import _CODES

    dev, dt = x_train.device, x_train.dtype
    G, C, Hp, d = init["fc1.weight"].shape
    CH = C * Hp
    B = batch_size
    beta1, beta2 = betas
    if eps_mode not in ("torch", "keras"):
        raise ValueError(f"eps_mode must be 'torch' or 'keras', got {eps_mode!r}")
    if not eps > 0:  # padding entries take 0 / (0 + eps) steps
        raise ValueError(f"eps must be positive, got {eps!r}")
    if len(group_n) != G or len(group_trial) != G or len(perms) != G:
        raise ValueError("group_trial, group_n and perms need one entry per group")
    if len(widths) != C or len(column_reset) != C:
        raise ValueError("widths and column_reset need one entry per column")
    can_fuse = HAVE_NUMBA and dev.type == "cpu" and dt in (torch.float32, torch.float64)
    if fused is None:
        fused = can_fuse
    elif fused and not can_fuse:
        raise ValueError("fused=True needs numba, a CPU device and float32/float64 data")

    # ---- one flat parameter buffer (param-major: every block is a contiguous tensor)
    sizes = [G * d * CH, G * CH, G * CH, G * C]
    offs = np.concatenate([[0], np.cumsum(sizes)])
    P = int(offs[-1])

    def views(buf):
        return (buf[offs[0]:offs[1]].view(G, C, d, Hp), buf[offs[1]:offs[2]].view(G, C, Hp),
                buf[offs[2]:offs[3]].view(G, C, Hp), buf[offs[3]:offs[4]].view(G, C))

    flat = torch.empty(P, dtype=dt, device=dev)
    W1T, b1, w2, b2 = views(flat)
    W1T.copy_(init["fc1.weight"].transpose(2, 3))
    b1.copy_(init["fc1.bias"]); w2.copy_(init["fc2.weight"]); b2.copy_(init["fc2.bias"])
    grad = torch.zeros(P, dtype=dt, device=dev)
    gW1T, gb1, gw2, gb2 = views(grad)
    m = torch.zeros(P, dtype=dt, device=dev)
    v = torch.zeros(P, dtype=dt, device=dev)

    # templates per reset method (int8, contiguous, same layout as the parameters)
    T1 = templates["fc1.weight"].to(device=dev, dtype=torch.int8).transpose(2, 3).contiguous()
    T2 = templates["fc2.weight"].to(device=dev, dtype=torch.int8).contiguous()
    resets = []
    for meth in sorted({r for r in column_reset if r is not None}):
        sel = torch.tensor([r == meth for r in column_reset], device=dev)
        resets.append((meth, (T1 * sel.view(1, C, 1, 1)).contiguous(), (T2 * sel.view(1, C, 1)).contiguous()))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    # every frozen network resets with its own posRand stream (as train_single(reset_seed=) does),
    # so its numbers do not depend on which job it was batched into, nor on the path below
    if reset_seeds is None:
        reset_seeds = torch.randint(0, 2**32, (G, C), generator=gen).numpy()
    seeds_np = np.ascontiguousarray(reset_seeds, dtype=np.int64).reshape(G, C)
    if fused and _kernels.AVAILABLE:
        codes_np = np.array([_CODES[r] if r is not None else -1 for r in column_reset], dtype=np.int64)
        w1_np, w2_np, t1_np, t2_np = W1T.numpy(), w2.numpy(), T1.numpy(), T2.numpy()
        e_np = w1_np.dtype.type(reset_eps)

        def do_resets(steps):
            _reset_nets(w1_np, w2_np, t1_np, t2_np, codes_np, e_np, seeds_np, steps)
    else:
        # the same streams in torch ops: step seeds hashed on the host, draws on the device
        ar = torch.arange(Hp, device=dev, dtype=torch.int64)
        idx1 = ar.view(1, Hp) * d + torch.arange(d, device=dev, dtype=torch.int64).view(d, 1)  # j*d + k

        def do_resets(steps):
            st = np.stack([_kernels.mix32_np(seeds_np, steps[:, None], b) for b in (0, 1)])
            st = torch.from_numpy(st).to(dev, non_blocking=True)
            for meth, t1, t2 in resets:
                _reset_streams_(W1T, t1, meth, reset_eps, st[0].view(G, C, 1, 1), idx1)
                _reset_streams_(w2, t2, meth, reset_eps, st[1].view(G, C, 1), ar)

    # ---- schedule: batches per epoch per group, masks, index tables
    T, n_max = x_train.shape[0], x_train.shape[1]
    gn = np.asarray(group_n, dtype=np.int64)
    nb = -(-gn // B)  # batches per epoch
    S = int(nb.max())
    x_flat = x_train.reshape(T * n_max, d).contiguous()
    y_flat = y_train.reshape(T * n_max).contiguous()
    base = np.asarray(group_trial, dtype=np.int64) * n_max
    idx = np.zeros((epochs, G, S * B), dtype=np.int64)
    wts = np.zeros((G, S * B), dtype=np.float64)
    for g in range(G):
        pg = np.asarray(perms[g])
        if pg.shape != (epochs, gn[g]):
            raise ValueError(f"perms[{g}] has shape {pg.shape}, expected {(epochs, int(gn[g]))}")
        idx[:, g, :gn[g]] = pg + base[g]
        idx[:, g, gn[g]:] = base[g]
        wts[g, :gn[g]] = 1.0
    idx_t = torch.from_numpy(idx.reshape(epochs, G, S, B).transpose(0, 2, 1, 3).copy()).to(dev)  # [E,S,G,B]
    wts3 = wts.reshape(G, S, B).transpose(1, 0, 2)  # [S,G,B]
    counts = wts3.sum(-1)  # [S,G]
    active = counts > 0  # [S,G]
    all_active = bool(active.all())
    partial = not bool((wts3 == 1).all())

    # Adam scalars per (epoch, step, group), computed in float64 on the host like torch.optim.Adam
    tcount = np.cumsum(np.tile(active, (epochs, 1)), axis=0).reshape(epochs, S, G)  # step counts
    tc = np.maximum(tcount, 1).astype(np.float64)
    act = np.broadcast_to(active, (epochs, S, G))
    ss_tab = np.where(act, lr / (1.0 - beta1 ** tc), 0.0)
    bc2s_tab = np.sqrt(1.0 - beta2 ** tc)
    eps_tab = np.full_like(bc2s_tab, eps) if eps_mode == "torch" else eps / bc2s_tab

    # validation data per group
    gt = torch.as_tensor(np.asarray(group_trial), device=dev)
    xv = x_val.index_select(0, gt)  # [G, nv, d]
    yv = y_val.index_select(0, gt)  # [G, nv]
    nv = xv.shape[1]
    sv = (2 * yv - 1).view(G, 1, nv)  # BCE(z, y) = softplus(-(2y-1) z)

    # records
    rec = torch.zeros(epochs, 4, G, C, dtype=torch.float32, device=dev)
    sw = torch.zeros(epochs, 2, G, C, dtype=torch.float32, device=dev) if sign_switch else None
    viol_log = torch.zeros(epochs * S, dtype=torch.int64, device=dev) if check_violations else None
    gn_t = torch.as_tensor(gn, device=dev, dtype=dt).view(G, 1)
    if sign_switch:
        wmask = torch.zeros(C, Hp, dtype=torch.float32, device=dev)
        for c, h in enumerate(widths):
            wmask[c, :h] = 1
        denom1 = (wmask.sum(1) * d).view(1, C)
        denom2 = wmask.sum(1).view(1, C)
        prev1, prev2 = torch.sign(W1T), torch.sign(w2)

    if fused:
        widths_np = np.asarray(widths, dtype=np.int64)
        par = torch.get_num_threads() > 1
        step_k = _step_parallel if par else _step_serial
        val_k = _val_parallel if par else _val_serial
        np_dt = np.float32 if dt == torch.float32 else np.float64
        # the sigmoid of the training step: libm exp in float64 runs (exact checks), a vectorised
        # float32 exp (relative error < 1e-7, below float32 resolution of the result) otherwise
        exact_exp = dt == torch.float64
        xs_np, ys_np = x_flat.numpy(), y_flat.numpy()
        pv = [t.numpy() for t in views(flat)]
        gv = [t.numpy() for t in views(grad)]  # zero beyond each width, for good
        flat_np, m_np, v_np, grad_np = flat.numpy(), m.numpy(), v.numpy(), grad.numpy()
        offs_np = offs.astype(np.int64)
        idx_np = idx_t.numpy()
        cnt_np = counts.astype(np.int64)  # [S, G]
        # per (epoch, step, group): 1/cnt, step size, sqrt(bc2), eps, 1-b1, b2, 1-b2
        sc_np = np.empty((epochs, S, G, 7), dtype=np_dt)
        sc_np[..., 0] = 1.0 / np.maximum(counts, 1)[None]
        sc_np[..., 1], sc_np[..., 2], sc_np[..., 3] = ss_tab, bc2s_tab, eps_tab
        sc_np[..., 4], sc_np[..., 5], sc_np[..., 6] = 1 - beta1, beta2, 1 - beta2
        zt = torch.zeros(G, C, S, B, dtype=dt)  # training logits of the epoch (for the train loss)
        zt_np = zt.numpy()
        ys_ep = torch.zeros(G, S * B, dtype=dt)
        hits_t = torch.zeros(G, C, dtype=torch.int64)
        hits_np = hits_t.numpy()
        xvt_np = xv.transpose(1, 2).contiguous().numpy()  # [G, d, nv]
        yv_np = yv.contiguous().numpy()
        vout_t = torch.zeros(2, G, C, dtype=torch.float64)
        vout_np = vout_t.numpy()
        tl_t = torch.zeros(G, C, dtype=torch.float64)
        tl_np = tl_t.numpy()
        gn_np = gn.copy()
    else:
        if not all_active:
            adam_tab = torch.from_numpy(np.stack([ss_tab, bc2s_tab, eps_tab, act * (1 - beta1),
                                                  np.where(act, beta2, 1.0), act * (1 - beta2)],
                                                 axis=2)).to(device=dev, dtype=dt)  # [E,S,6,G]
            elem_group = torch.cat([torch.arange(G, device=dev).repeat_interleave(s // G) for s in sizes])
        w_t = torch.from_numpy(wts3.copy()).to(device=dev, dtype=dt)  # [S,G,B]
        chunk = max(1, min(G, (1 << 22) // max(1, nv * CH * x_train.element_size())))
        lw_t = torch.from_numpy((wts3 / np.maximum(counts, 1)[..., None]).copy()).to(device=dev, dtype=dt)
        tr_loss = torch.zeros(G, C, dtype=dt, device=dev)
        tr_acc = torch.zeros(G, C, dtype=dt, device=dev)

    do_resets(np.zeros(G, dtype=np.int64))  # a no-op: the start complies by construction
    step_no = 0
    for e in range(epochs):
        if fused:
            hits_t.zero_()
        else:
            tr_loss.zero_()
            tr_acc.zero_()
        for s in range(S):
            if fused:
                step_k(xs_np, ys_np, idx_np[e, s], cnt_np[s], *pv, *gv, flat_np, m_np, v_np, grad_np,
                       offs_np, sc_np[e, s], widths_np, zt_np[:, :, s], hits_np, exact_exp)
            else:
                ii = idx_t[e, s].reshape(-1)
                Xb = x_flat.index_select(0, ii).view(G, B, d)
                yb = y_flat.index_select(0, ii).view(G, 1, B)
                pre = torch.matmul(Xb.unsqueeze(1), W1T).add_(b1.unsqueeze(2))  # [G,C,B,Hp]
                h = torch.relu(pre)
                z = torch.matmul(h, w2.unsqueeze(-1)).squeeze(-1).add_(b2.unsqueeze(-1))  # [G,C,B]
                # Keras-style running train metrics, measured before the update
                bce = torch.nn.functional.softplus(z) - yb * z
                hit = ((z > 0) == (yb > 0.5)).to(dt)
                if partial:
                    ws = w_t[s].unsqueeze(1)  # [G,1,B]
                    bce, hit = bce * ws, hit * ws
                tr_loss.add_(bce.sum(-1))
                tr_acc.add_(hit.sum(-1))
                # backward of each network's mean BCE
                dz = (torch.sigmoid(z) - yb).mul_(lw_t[s].unsqueeze(1))  # [G,C,B]
                torch.sum(dz, -1, out=gb2)
                gw2.copy_(torch.matmul(dz.unsqueeze(2), h).squeeze(2))
                dh = (dz.unsqueeze(-1) * w2.unsqueeze(2)).mul_(pre > 0)  # [G,C,B,Hp]
                gW1T.copy_(torch.matmul(Xb.transpose(1, 2).unsqueeze(1), dh))
                torch.sum(dh, 2, out=gb1)
                # Adam (torch.optim.Adam single-tensor semantics), masked per group when needed
                if all_active:
                    ss, bc2s, ee = float(ss_tab[e, s, 0]), float(bc2s_tab[e, s, 0]), float(eps_tab[e, s, 0])
                    m.lerp_(grad, 1 - beta1)
                    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    flat.addcdiv_(m, (v.sqrt() / bc2s).add_(ee), value=-ss)
                else:
                    ss_, bc2s_, eps_, w1_, b2_, w2_ = adam_tab[e, s].index_select(1, elem_group).unbind(0)
                    m.lerp_(grad, w1_)
                    v.mul_(b2_).addcmul_(grad * w2_, grad)
                    flat.sub_((m / (v.sqrt() / bc2s_).add_(eps_)).mul_(ss_))
            do_resets(tcount[e, s])
            if check_violations:
                viol_log[step_no] = ((W1T * T1) < 0).sum() + ((w2 * T2) < 0).sum()
            step_no += 1
        # train metrics of the epoch
        if fused:
            ys_ep.copy_(y_flat[idx_t[e].permute(1, 0, 2).reshape(G, S * B)])
            _train_loss(zt_np.reshape(G, C, S * B), ys_ep.numpy(), gn_np, tl_np)
            rec[e, 0] = tl_t
            rec[e, 1] = hits_t / gn_t
        else:
            rec[e, 0] = tr_loss / gn_t
            rec[e, 1] = tr_acc / gn_t
        # validation
        if fused:
            val_k(xvt_np, yv_np, pv[0], pv[1], pv[2], pv[3], widths_np, vout_np)
            rec[e, 2:4] = vout_t
        else:
            for g0 in range(0, G, chunk):
                g1 = min(G, g0 + chunk)
                hv = torch.matmul(xv[g0:g1].unsqueeze(1), W1T[g0:g1]).add_(b1[g0:g1].unsqueeze(2)).relu_()
                zv = torch.matmul(hv, w2[g0:g1].unsqueeze(-1)).squeeze(-1).add_(b2[g0:g1].unsqueeze(-1))
                rec[e, 2, g0:g1] = _softplus_neg(zv * sv[g0:g1]).mean(-1)
                rec[e, 3, g0:g1] = ((zv > 0) == (sv[g0:g1] > 0)).float().mean(-1)
        if sign_switch:
            s1, s2 = torch.sign(W1T), torch.sign(w2)
            sw[e, 0] = (s1 != prev1).sum((2, 3)).float() / denom1
            sw[e, 1] = (s2 != prev2).sum(2).float() / denom2
            prev1, prev2 = s1, s2

    return BatchedResult(
        train_loss=rec[:, 0].cpu(), train_acc=rec[:, 1].cpu(), val_loss=rec[:, 2].cpu(),
        val_acc=rec[:, 3].cpu(), switch=sw.cpu() if sw is not None else None,
        params={"fc1.weight": W1T.transpose(2, 3).cpu().contiguous(), "fc1.bias": b1.cpu().clone(),
                "fc2.weight": w2.cpu().clone(), "fc2.bias": b2.cpu().clone()},
        violations=viol_log.cpu() if viol_log is not None else None, fused=fused)


# ----------------------------------------------------------------------------- one network alone
def train_single(net, x: torch.Tensor, y: torch.Tensor, perms: np.ndarray, template: dict | None,
                 reset: str = "posRand", *, lr: float = 0.03, batch_size: int = 32,
                 betas=(0.9, 0.999), eps: float = 1e-7, reset_eps: float = 1e-3,
                 x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                 generator: torch.Generator | None = None,
                 reset_seed: int | None = None) -> list[tuple[float, float, float, float]]:
    """The naive reference: one ``XORNet`` with its own ``torch.optim.Adam`` and, when
    ``template`` is given (``{name: sign tensor}``), a reset after every step: with
    ``reset_seed`` (CPU) the network's own posRand stream, the one ``train_batched`` gives it
    (``network_reset_seed``), else ``reset_`` drawing from ``generator``.  ``perms``:
    ``[epochs, n]`` batch orders.  Returns per-epoch (train_loss, train_acc, val_loss, val_acc)."""
    from .. import _kernels
    from ..freeze import _CODES, reset_

    own_stream = reset_seed is not None and _kernels.AVAILABLE
    param_index = {"fc1.weight": 0, "fc2.weight": 1}

    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas, eps=eps)
    lossf = torch.nn.BCEWithLogitsLoss()
    params = dict(net.named_parameters())
    tmpl = [(params[k], torch.as_tensor(t).to(torch.int8).view_as(params[k])) for k, t in (template or {}).items()]
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
            with torch.no_grad():
                for (name, _), (p, t) in zip((template or {}).items(), tmpl):
                    if own_stream:
                        w = p.data.view(-1).numpy()
                        _kernels.reset_range(w, t.view(-1).numpy(), _CODES[reset], w.dtype.type(reset_eps),
                                             _kernels.mix32(reset_seed, step, param_index[name]), 0, w.size)
                    else:
                        reset_(p.data, t, reset, reset_eps, generator)
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


def prepare_job(hp: XorHparams, groups: Sequence[tuple[int, int]], cols: Sequence[tuple[str, int]],
                device: str = "cpu") -> tuple[dict, dict, list]:
    """The inputs of ``train_batched`` for groups ``(trial, n)`` x columns ``(condition, width)``:
    per-trial data, shared initialisations (made compliant per condition), templates, batch
    orders.  Returns (keyword arguments, {trial: seed}, [Condition per column])."""
    from ..data.xor import trial_data

    dt = getattr(torch, hp.dtype)
    trials_ = sorted({t for t, _ in groups})
    tpos = {t: i for i, t in enumerate(trials_)}
    seeds = {t: trial_seed(hp.seed, t) for t in trials_}
    n_max = max(n for _, n in groups)
    data = [trial_data(seeds[t], n_max, hp.n_val, hp.dim, hp.variant, hp.gaussian_sd) for t in trials_]
    as_t = lambda arrs: torch.from_numpy(np.stack(arrs)).to(device=device, dtype=dt)
    conds = [parse_condition(c, hp.reset) for c, _ in cols]
    G, C, Hp, d = len(groups), len(cols), max(w for _, w in cols), hp.dim
    init = {"fc1.weight": np.zeros((G, C, Hp, d), np.float32), "fc1.bias": np.zeros((G, C, Hp), np.float32),
            "fc2.weight": np.zeros((G, C, Hp), np.float32), "fc2.bias": np.zeros((G, C), np.float32)}
    tmpl = {"fc1.weight": np.zeros((G, C, Hp, d), np.int8), "fc2.weight": np.zeros((G, C, Hp), np.int8)}
    from ..models.mlp import init_params

    cache: dict = {}
    base: dict = {}  # one initialisation per (trial, width), shared by the conditions
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
    kw = dict(
        x_train=as_t([dd.x_train for dd in data]), y_train=as_t([dd.y_train for dd in data]),
        x_val=as_t([dd.x_val for dd in data]), y_val=as_t([dd.y_val for dd in data]),
        group_trial=[tpos[t] for t, _ in groups], group_n=[n for _, n in groups],
        perms=[epoch_permutations(seeds[t], n, hp.epochs) for t, n in groups],
        init={k: torch.from_numpy(v).to(device=device, dtype=dt) for k, v in init.items()},
        templates={k: torch.from_numpy(v).to(device) for k, v in tmpl.items()},
        column_reset=[c.reset if c.frozen else None for c in conds], widths=[w for _, w in cols],
        reset_seeds=np.array([[network_reset_seed(hp.seed, t, n, c, w) for c, w in cols] for t, n in groups],
                             dtype=np.int64).reshape(len(groups), len(cols)),
        epochs=hp.epochs, lr=hp.lr, batch_size=hp.batch_size, betas=(hp.beta1, hp.beta2),
        eps=hp.adam_eps, eps_mode=hp.eps_mode, reset_eps=hp.reset_eps, sign_switch=hp.sign_switch)
    return kw, seeds, conds


# ----------------------------------------------------------------------------- job planning
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


def _bucket_batches(nbs: Sequence[int], ratio: float = 1.25) -> list[tuple[int, ...]]:
    """Batches-per-epoch values grouped into jobs; merging b and b' masks (1 - b/b') of the
    smaller groups' steps, so only values within ``ratio`` are merged."""
    out: list[list[int]] = []
    for b in sorted(set(nbs)):
        if out and b <= ratio * out[-1][0]:
            out[-1].append(b)
        else:
            out.append([b])
    return [tuple(x) for x in out]


@register
class Xor5D(Experiment):
    name = "xor5d"
    description = ("XOR-5D simulation (paper Figures 1, 4, C.1): frozen vs fluid polarity on a "
                   "5->H->1 ReLU net, all trials x conditions of a job batched in one tensor program.")
    Hparams = XorHparams
    conditions = BASE_CONDITIONS
    cli_fields = {"reset": "default Freeze-SGD reset of frozen conditions without '@method' "
                           "(posCon|posRand|zero|flip)",
                  "variant": "XOR data: xor (reference generator) | gaussian (Gaussian parity)"}
    presets = {
        "fig1": XorHparams(sign_switch=True),
        "fig4": XorHparams(widths=FIG4_WIDTHS, sample_sizes=FIG1_N),
        "fig4-n500": XorHparams(widths=FIG4_WIDTHS, sample_sizes=(500,)),
        "c1": XorHparams(conditions=tuple(f"{c}@{r}" for c in ("frozen-sufficient", "frozen-rand")
                                          for r in RESET_METHODS) + ("fluid-rand",)),
        "quick": XorHparams(sample_sizes=(8, 40, 100), widths=(8, 64), trials=3, epochs=20,
                            conditions=BASE_CONDITIONS, sign_switch=True, merge_ratio=100.0),
    }

    def is_condition(self, condition: str) -> bool:
        try:
            parse_condition(condition)
            return True
        except ExperimentError:
            return False

    def validate(self, hp: XorHparams) -> None:
        super().validate(hp)
        if hp.trials < 1 or hp.epochs < 1 or hp.batch_size < 1:
            raise ExperimentError(f"xor5d: trials, epochs and batch_size must be >= 1 "
                                  f"(got {hp.trials}, {hp.epochs}, {hp.batch_size})")
        if not hp.sample_sizes or min(hp.sample_sizes) < 4:
            raise ExperimentError(f"xor5d: every sample size must be >= 4, got {hp.sample_sizes}")
        fl = [n // 4 * 4 for n in hp.sample_sizes]
        if len(set(fl)) != len(fl):
            raise ExperimentError(f"xor5d: sample sizes {hp.sample_sizes} collide once floored to "
                                  f"multiples of 4 ({fl})")
        if not hp.widths or min(hp.widths) < 1:
            raise ExperimentError(f"xor5d: widths must be >= 1, got {hp.widths}")
        if hp.reset not in RESET_METHODS:
            raise ExperimentError(f"xor5d: unknown reset {hp.reset!r}; known: {', '.join(RESET_METHODS)}")
        if hp.variant not in ("xor", "gaussian"):
            raise ExperimentError(f"xor5d: unknown variant {hp.variant!r}; known: xor, gaussian")
        if hp.eps_mode not in ("torch", "keras"):
            raise ExperimentError(f"xor5d: eps_mode must be 'torch' or 'keras', got {hp.eps_mode!r}")
        for name in ("lr", "adam_eps", "reset_eps"):
            v = getattr(hp, name)
            if not (isinstance(v, (int, float)) and 0 < v < math.inf):
                raise ExperimentError(f"xor5d: {name} must be a positive number, got {v!r}")
        if not (0 <= hp.beta1 < 1 and 0 <= hp.beta2 < 1):
            raise ExperimentError(f"xor5d: betas must lie in [0, 1), got ({hp.beta1!r}, {hp.beta2!r})")
        if hp.dtype not in ("float32", "float64"):
            raise ExperimentError(f"xor5d: dtype must be float32 or float64, got {hp.dtype!r}")
        if hp.dim < 2:
            raise ExperimentError(f"xor5d: dim must be >= 2, got {hp.dim}")
        for c in hp.cutoffs:
            if not 0 < c <= 1:
                raise ExperimentError(f"xor5d: cut-offs must lie in (0, 1], got {c}")

    # -- grid
    def trials(self, hp: XorHparams) -> list[TrialKey]:
        self.validate(hp)
        return [TrialKey(c, n // 4 * 4, w, t) for c in hp.conditions for n in hp.sample_sizes
                for w in hp.widths for t in range(hp.trials)]

    def jobs(self, hp: XorHparams) -> list[Job]:
        self.validate(hp)
        ns = sorted({n // 4 * 4 for n in hp.sample_sizes})
        nb = {n: -(-n // hp.batch_size) for n in ns}
        jobs = []
        for bb in _bucket_batches(list(nb.values()), hp.merge_ratio):
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

    # -- compute
    def run_job(self, hp: XorHparams, job: Job, device: str = "cpu") -> list[TrialResult]:
        self.validate(hp)
        t0 = time.perf_counter()
        old_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(hp.threads)))
        try:
            groups = sorted({(k.trial, k.n) for k in job.trials})
            cols = sorted({(k.condition, k.width) for k in job.trials},
                          key=lambda cw: (hp.conditions.index(cw[0]) if cw[0] in hp.conditions else 99, cw))
            kw, seeds, conds = prepare_job(hp, groups, cols, device)
            gen = torch.Generator().manual_seed(_stream_seed("xor5d/reset", hp.seed, job.key))
            res = train_batched(**kw, generator=gen)
        finally:
            torch.set_num_threads(old_threads)
        wall = time.perf_counter() - t0
        return self._results(hp, job, groups, cols, conds, seeds, res, wall)

    def _results(self, hp, job, groups, cols, conds, seeds, res: BatchedResult, wall) -> list[TrialResult]:
        gpos = {g: i for i, g in enumerate(groups)}
        cpos = {c: i for i, c in enumerate(cols)}
        # [G, C, E] python lists in one conversion each
        tl, ta, vl, va = (np.ascontiguousarray(x.numpy().transpose(1, 2, 0), dtype=np.float64).tolist()
                          for x in (res.train_loss, res.train_acc, res.val_loss, res.val_acc))
        swl = (np.ascontiguousarray(res.switch.numpy().transpose(2, 3, 0, 1), dtype=np.float64).tolist()
               if res.switch is not None else None)  # [G,C,E,2]
        per_net = wall / max(1, len(job.trials))
        epochs_r = range(1, hp.epochs + 1)
        out = []
        with gc_paused():
            for k in job.trials:
                gi, ci = gpos[(k.trial, k.n)], cpos[(k.condition, k.width)]
                a, b, c_, d_ = tl[gi][ci], ta[gi][ci], vl[gi][ci], va[gi][ci]
                if swl is not None:
                    s = swl[gi][ci]
                    recs = [EpochRecord(e, a[i], b[i], c_[i], d_[i],
                                        {"switch/fc1.weight": s[i][0], "switch/fc2.weight": s[i][1]})
                            for i, e in enumerate(epochs_r)]
                else:
                    recs = list(map(EpochRecord, epochs_r, a, b, c_, d_))
                cond = conds[ci]
                out.append(TrialResult(k, seeds[k.trial], per_net, recs, extra={
                    "job": job.key, "job_networks": len(job.trials), "job_wall_s": wall,
                    "frozen": cond.frozen, "template": cond.template,
                    "reset": cond.reset if cond.frozen else None}))
        return out

    # -- report
    def report(self, hp: XorHparams, epochs, trials, outdir: Path) -> str:
        return xor_report(hp, epochs, trials, Path(outdir))


# ----------------------------------------------------------------------------- report
def _theory_curves(widths: Sequence[int]) -> dict[str, tuple[list, list]]:
    """Theory curves for Figure 4A when ``polarity.theory`` provides them (else {})."""
    out: dict[str, tuple[list, list]] = {}
    mod = None
    for name in ("polarity.theory", "polarity.theory.xor"):
        try:
            m = __import__(name, fromlist=["reference_probability"])
        except ImportError:
            continue
        if hasattr(m, "reference_probability"):
            mod = m
            break
    if mod is None:
        return out
    ws = sorted(set(int(w) for w in widths))
    try:
        out["theory: reference formula"] = (ws, [float(mod.reference_probability(w, d=5)) for w in ws])
    except Exception:  # noqa: BLE001 - an overlay is optional
        pass
    exact = getattr(mod, "exact_probability", None)
    if exact is not None:
        # the variant that is this experiment's network on its own support (biases free, noise
        # inputs present, the quadrant squares); fall back to the theory module's default
        for label, kw in (("theory: exact (xor5d network)", {"variant": "xor5d"}), ("theory: exact", {})):
            try:
                vals = []
                for w in ws:
                    r = exact(w, **kw)
                    vals.append(float(r[0] if isinstance(r, tuple) else r))
                out[label] = (ws, vals)
                break
            except Exception:  # noqa: BLE001 - an overlay is optional
                continue
    return out


def _fmt_cell(r, c: float) -> str:
    col = f"epochs_to_{c:g}_median"
    ep = r.get(col, float("nan"))
    ep_s = "-" if ep != ep else f"{ep:.0f}"
    return (f"{r['error_median']:.3f} [{r['error_q25']:.3f}, {r['error_q75']:.3f}] / "
            f"{ep_s} / {r[f'success_{c:g}']:.2f}")


def _pivot_table(summ, axis: str, conds: Sequence[str], c: float) -> list[str]:
    from ..analysis.figures import markdown_table
    import pandas as pd

    rows = []
    for x, g in summ.groupby(axis, sort=True):
        row = {axis: int(x)}
        for cond in conds:
            gc = g[g["condition"] == cond]
            row[cond] = _fmt_cell(gc.iloc[0], c) if len(gc) else "-"
        rows.append(row)
    return [markdown_table(pd.DataFrame(rows), columns=[axis, *conds])]


def xor_report(hp: XorHparams, epochs, trials, outdir: Path) -> str:
    from ..analysis import figures as F
    from ..analysis.metrics import cutoff_column, per_trial, summarize

    outdir.mkdir(parents=True, exist_ok=True)
    cutoffs = tuple(hp.cutoffs) or (0.9,)
    c0 = cutoffs[0]
    ecol = cutoff_column(c0)
    pt = per_trial(epochs, cutoffs=cutoffs)
    summ = summarize(pt, cutoffs=cutoffs)
    pt.to_csv(outdir / "xor5d_per_trial.csv", index=False)
    summ.to_csv(outdir / "xor5d_summary.csv", index=False)
    conds = [c for c in hp.conditions if c in set(pt["condition"])] + sorted(set(pt["condition"]) - set(hp.conditions))
    ns, ws = sorted(pt["n"].unique()), sorted(pt["width"].unique())
    main_w = 64 if 64 in ws else ws[-1]
    main_n = 500 if 500 in ns else ns[-1]
    lines = ["## XOR-5D (paper Figures 1, 4, C.1)", "",
             f"Network 5→H→1 (ReLU, sigmoid), Adam lr {hp.lr}, batch {hp.batch_size}, {hp.epochs} epochs, "
             f"{hp.trials} trials per cell, data variant `{hp.variant}`, reset `{hp.reset}` unless the "
             f"condition says `@method`. Error = validation error at the epoch of minimum validation loss; "
             f"epochs = first epoch with validation accuracy ≥ {c0:g} (median over the trials that reach "
             f"it); success = fraction of trials that reach it.", "",
             "Per-trial measures: [xor5d_per_trial.csv](xor5d_per_trial.csv); summary: "
             "[xor5d_summary.csv](xor5d_summary.csv).", ""]

    def fig(name, title):
        lines.extend([f"![{title}]({name}.png)", "", f"{title} — data: [{name}.csv]({name}.csv)", ""])

    base = pt[~pt["condition"].str.contains("@")] if pt["condition"].str.contains("@").any() else pt
    at_w = base[base["width"] == main_w]
    if len(ns) > 1 and len(at_w):
        F.plot_band(at_w, "n", "error", outdir / "fig1b_error_vs_n", logx=True,
                    title=f"Fig. 1B: error at convergence (H={main_w})", xlabel="training samples n",
                    ylabel="validation error (median, 25-75%)")
        fig("fig1b_error_vs_n", f"Figure 1B — validation error at convergence vs n (H={main_w})")
        F.plot_epochs_to_cutoff(at_w, "n", c0, outdir / "fig1c_epochs_vs_n", logx=True,
                                title=f"Fig. 1C: epochs to {c0:g} (H={main_w})", xlabel="training samples n")
        fig("fig1c_epochs_vs_n", f"Figure 1C — epochs to {c0:g} validation accuracy vs n (H={main_w})")
        F.plot_success(at_w, "n", ecol, outdir / "fig1c_success_vs_n", logx=True,
                       title=f"Fig. 1C: success rate at {c0:g} (H={main_w})", xlabel="training samples n")
        fig("fig1c_success_vs_n", f"Figure 1C — success rate (reaching {c0:g}) vs n (H={main_w})")
    at_n = base[base["n"] == main_n]
    if len(ws) > 1 and len(at_n):
        theory = _theory_curves(ws)
        F.plot_success(at_n, "width", ecol, outdir / "fig4a_success_vs_width", overlay=theory,
                       title=f"Fig. 4A: success rate at {c0:g} (n={main_n})", xlabel="hidden width H")
        fig("fig4a_success_vs_width", f"Figure 4A — success probability vs width (n={main_n})"
            + ("; dashed: theory" if theory else " (polarity.theory not available: no theory curve)"))
        F.plot_epochs_to_cutoff(at_n, "width", c0, outdir / "fig4b_epochs_vs_width",
                                title=f"Fig. 4B: epochs to {c0:g} (n={main_n})", xlabel="hidden width H")
        fig("fig4b_epochs_vs_width", f"Figure 4B — epochs to {c0:g} vs width (n={main_n})")
        F.plot_band(at_n, "width", "error", outdir / "fig4c_error_vs_width",
                    title=f"Fig. 4C: error at convergence (n={main_n})", xlabel="hidden width H",
                    ylabel="validation error (median, 25-75%)")
        fig("fig4c_error_vs_width", f"Figure 4C — error at convergence vs width (n={main_n})")
        fr = base[base["condition"].str.startswith("frozen-rand")]
        if len(ns) > 1 and len(fr):
            F.plot_success(fr, "width", ecol, outdir / "fig4d_frozen_rand_success_by_n", by="n",
                           overlay=theory, title="Frozen RAND: success rate vs width, per n",
                           xlabel="hidden width H")
            fig("fig4d_frozen_rand_success_by_n", "Figure 4 (all sample sizes) — frozen-rand success vs width, one line per n")
    resets = pt[pt["condition"].str.startswith("frozen")]
    if resets["condition"].str.contains("@").any():
        rw = resets[resets["width"] == main_w]
        if len(ns) > 1:
            F.plot_band(rw, "n", "error", outdir / "c1_error_vs_n", logx=True, xlabel="training samples n",
                        title="C.1: reset methods, error at convergence", ylabel="validation error (median, 25-75%)")
            fig("c1_error_vs_n", "Figure C.1 — reset methods side by side: error at convergence vs n")
            F.plot_epochs_to_cutoff(rw, "n", c0, outdir / "c1_epochs_vs_n", logx=True, xlabel="training samples n",
                                    title=f"C.1: reset methods, epochs to {c0:g}")
            fig("c1_epochs_vs_n", f"Figure C.1 — reset methods side by side: epochs to {c0:g} vs n")
        else:
            F.plot_band(rw, "width", "error", outdir / "c1_error_vs_width", xlabel="hidden width H",
                        title="C.1: reset methods, error at convergence")
            fig("c1_error_vs_width", "Figure C.1 — reset methods side by side: error")
    sw = [c for c in ("switch/fc1.weight", "switch/fc2.weight") if c in epochs.columns]
    if sw:
        fl = epochs[(epochs["condition"] == "fluid-rand") & (epochs["width"] == main_w) & (epochs["epoch"] <= 50)]
        fl = fl[fl[sw[0]].notna()] if len(fl) else fl
        if len(fl):
            long = fl.melt(id_vars=["epoch"], value_vars=sw, var_name="layer", value_name="switch")
            F.plot_band(long, "epoch", "switch", outdir / "switch_fluid_rand", by="layer",
                        title=f"fluid-rand: sign switches per epoch (H={main_w})",
                        ylabel="sign-switch fraction (median, 25-75%)")
            fig("switch_fluid_rand", "Polarity dynamics — fluid-rand sign-switch fraction per epoch (all n)")
    lines += [f"### Results (cells: error median [25%, 75%] / epochs to {c0:g} / success)", ""]
    if len(ns) > 1 or len(ws) == 1:
        lines += [f"At H = {main_w}:", ""] + _pivot_table(summ[summ["width"] == main_w], "n", conds, c0) + [""]
    if len(ws) > 1:
        lines += [f"At n = {main_n}:", ""] + _pivot_table(summ[summ["n"] == main_n], "width", conds, c0) + [""]
    if len(cutoffs) > 1:
        cols = ["condition", "n", "width"] + [f"success_{c:g}" for c in cutoffs]
        lines += ["Success rate at every cut-off:", "",
                  F.markdown_table(summ[(summ["width"] == main_w) | (summ["n"] == main_n)], columns=cols), ""]
    return "\n".join(lines)
