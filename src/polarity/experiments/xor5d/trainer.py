"""The batched XOR-5D trainer: ``G x C`` networks trained at once in one program.

A job is a set of groups (trial, n) times a set of columns (condition, width).  Parameters,
Adam moments and gradients live in flat buffers with a ``[group, column, ...]`` layout; each
optimizer step runs either the fused numba kernels (``kernels.py``, CPU) or the same arithmetic
in batched torch ops (any device), then the Freeze-SGD reset of every frozen network.  Every
network follows exactly its own ``torch.optim.Adam`` trajectory (docs/xor5d.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ... import _numba
from ...freeze.methods import CODES, check_method
from ...freeze.torch_reset import reset_torch_
from ...seeds import parameter_step_seed

if _numba.NUMBA:
    from . import kernels


@dataclass(frozen=True)
class XorJob:
    """One job's arrays and settings (``plan.prepare_job`` builds it; both paths read it).

    ``x_train [T, n_max, d]``, ``y_train [T, n_max]``, ``x_val [T, n_val, d]``, ``y_val [T, n_val]``:
    per-trial data; group g uses trial ``group_trial[g]``, the first ``group_n[g]`` points and the
    batch order ``perms[g]`` (``[epochs, n]``).  ``init``: ``fc1.weight [G,C,Hp,d]``,
    ``fc1.bias [G,C,Hp]``, ``fc2.weight [G,C,Hp]``, ``fc2.bias [G,C]`` (zero beyond each column's
    width).  ``templates``: ``fc1.weight``/``fc2.weight`` int8 sign tensors of the same shapes (0 =
    free: fluid columns and padding).  ``column_reset[c]``: the reset method of column c (None for
    fluid); ``widths[c]``: its true width.  ``reset_seeds [G, C]``: each network's posRand seed
    (``network_reset_seed``; a ``Freezer`` with that seed draws the same values).  The rest:
    Adam and the Freeze-SGD reset (docs/xor5d.md)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    group_trial: Sequence[int]
    group_n: Sequence[int]
    perms: Sequence[np.ndarray]
    init: dict[str, torch.Tensor]
    templates: dict[str, torch.Tensor]
    column_reset: Sequence[str | None]
    widths: Sequence[int]
    reset_seeds: np.ndarray
    epochs: int
    lr: float = 0.03
    batch_size: int = 32
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7
    eps_mode: str = "torch"   # "torch" | "keras": where Adam's eps enters
    reset_eps: float = 1e-3
    sign_switch: bool = False  # record per-epoch sign-switch fractions
    shape: tuple[int, int] = field(init=False)  # (G, C)

    def __post_init__(self):
        G, C = self.init["fc1.weight"].shape[:2]
        object.__setattr__(self, "shape", (G, C))
        if self.eps_mode not in ("torch", "keras"):
            raise ValueError(f"eps_mode must be 'torch' or 'keras', got {self.eps_mode!r}")
        if not self.eps > 0:  # padding entries take 0 / (0 + eps) steps
            raise ValueError(f"eps must be positive, got {self.eps!r}")
        if len(self.group_n) != G or len(self.group_trial) != G or len(self.perms) != G:
            raise ValueError("group_trial, group_n and perms need one entry per group")
        if len(self.widths) != C or len(self.column_reset) != C:
            raise ValueError("widths and column_reset need one entry per column")
        if np.shape(self.reset_seeds) != (G, C):
            raise ValueError(f"reset_seeds has shape {np.shape(self.reset_seeds)}, expected {(G, C)}")
        for r in self.column_reset:
            if r is not None:
                check_method(r)


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


def train_batched(job: XorJob, *, fused: bool | None = None, check_violations: bool = False) -> BatchedResult:
    """Train the ``G x C`` networks of ``job`` at once.  ``fused``: use the numba kernels (CPU,
    float32/float64; default when available) or the torch ops (any device).
    ``check_violations``: count the template violations left after every step."""
    dev, dt = job.x_train.device, job.x_train.dtype
    G, C = job.shape
    can_fuse = _numba.NUMBA and dev.type == "cpu" and dt in (torch.float32, torch.float64)
    if fused is None:
        fused = can_fuse
    elif fused and not can_fuse:
        raise ValueError("fused=True needs numba, a CPU device and float32/float64 data")

    buf = _Buffers(job.init)
    reset = _Resetter(buf, job, kernels=fused and _numba.AVAILABLE)
    sched = _Schedule(job)
    path = (_FusedPath if fused else _TorchPath)(buf, sched, job)

    epochs = job.epochs
    rec = torch.zeros(epochs, 4, G, C, dtype=torch.float32, device=dev)  # train/val loss/acc
    switch = _SignSwitch(buf, job.widths, epochs, fused=fused) if job.sign_switch else None
    viol_log = torch.zeros(epochs * sched.S, dtype=torch.int64, device=dev) if check_violations else None
    reset(np.zeros(G, dtype=np.int64))  # a no-op: the start complies by construction
    step_no = 0
    for e in range(epochs):
        path.start_epoch()
        for s in range(sched.S):
            path.step(e, s)
            reset(sched.tcount[e, s])
            if viol_log is not None:
                viol_log[step_no] = reset.violations()
            step_no += 1
        path.record_train(e, rec[e])
        path.record_validation(rec[e])
        if switch is not None:
            switch.record(e)

    W1T, b1, w2, b2 = buf.net
    return BatchedResult(
        train_loss=rec[:, 0].cpu(), train_acc=rec[:, 1].cpu(), val_loss=rec[:, 2].cpu(),
        val_acc=rec[:, 3].cpu(), switch=switch.fractions.cpu() if switch is not None else None,
        params={"fc1.weight": W1T.transpose(2, 3).cpu().contiguous(), "fc1.bias": b1.cpu().clone(),
                "fc2.weight": w2.cpu().clone(), "fc2.bias": b2.cpu().clone()},
        violations=viol_log.cpu() if viol_log is not None else None, fused=fused)


# ----------------------------------------------------------------------------- state
class _Buffers:
    """One flat buffer each for the parameters, gradients and Adam moments (param-major: every
    block is a contiguous tensor), and their ``[G, C, ...]`` views: ``net`` and ``grads`` are
    (W1T [G,C,d,Hp], b1 [G,C,Hp], w2 [G,C,Hp], b2 [G,C])."""

    def __init__(self, init: dict[str, torch.Tensor]):
        w1 = init["fc1.weight"]
        G, C, Hp, d = w1.shape
        self.G, self.C, self.Hp, self.d = G, C, Hp, d
        self.sizes = [G * d * C * Hp, G * C * Hp, G * C * Hp, G * C]
        self.offs = np.concatenate([[0], np.cumsum(self.sizes)])
        P = int(self.offs[-1])
        self.flat = torch.empty(P, dtype=w1.dtype, device=w1.device)
        self.net = self.views(self.flat)
        W1T, b1, w2, b2 = self.net
        W1T.copy_(init["fc1.weight"].transpose(2, 3))
        b1.copy_(init["fc1.bias"]); w2.copy_(init["fc2.weight"]); b2.copy_(init["fc2.bias"])
        self.grad = torch.zeros(P, dtype=w1.dtype, device=w1.device)  # zero beyond each width, for good
        self.grads = self.views(self.grad)
        self.m = torch.zeros(P, dtype=w1.dtype, device=w1.device)
        self.v = torch.zeros(P, dtype=w1.dtype, device=w1.device)

    def views(self, buf: torch.Tensor) -> tuple[torch.Tensor, ...]:
        G, C, Hp, d, o = self.G, self.C, self.Hp, self.d, self.offs
        return (buf[o[0]:o[1]].view(G, C, d, Hp), buf[o[1]:o[2]].view(G, C, Hp),
                buf[o[2]:o[3]].view(G, C, Hp), buf[o[3]:o[4]].view(G, C))


class _Schedule:
    """Which samples every group trains on at every step, and the Adam scalars of each step.

    Groups have ``S_g = ceil(n_g / B)`` batches per epoch (the last one partial, as Keras); the
    job runs ``S = max S_g`` steps per epoch and a group sits out (masked) the steps it doesn't
    have, its parameters, moments and Adam step count untouched.  All tables are built on the
    host once, so the training loop has no host syncs."""

    def __init__(self, job: XorJob):
        x_train, group_trial, group_n, perms = job.x_train, job.group_trial, job.group_n, job.perms
        epochs, B, lr, betas, eps = job.epochs, job.batch_size, job.lr, job.betas, job.eps
        n_max = x_train.shape[1]
        G = len(group_n)
        beta1, beta2 = betas
        self.B = B
        self.gn = gn = np.asarray(group_n, dtype=np.int64)
        nb = -(-gn // B)  # batches per epoch
        self.S = S = int(nb.max())
        base = np.asarray(group_trial, dtype=np.int64) * n_max  # row of each group's trial
        idx = np.zeros((epochs, G, S * B), dtype=np.int64)
        wts = np.zeros((G, S * B), dtype=np.float64)
        for g in range(G):
            pg = np.asarray(perms[g])
            if pg.shape != (epochs, gn[g]):
                raise ValueError(f"perms[{g}] has shape {pg.shape}, expected {(epochs, int(gn[g]))}")
            idx[:, g, :gn[g]] = pg + base[g]
            idx[:, g, gn[g]:] = base[g]
            wts[g, :gn[g]] = 1.0
        # rows of the flat training data, [E, S, G, B]
        self.idx = torch.from_numpy(idx.reshape(epochs, G, S, B).transpose(0, 2, 1, 3).copy()).to(x_train.device)
        self.weights = wts3 = wts.reshape(G, S, B).transpose(1, 0, 2)  # [S, G, B]: 1 = a real sample
        self.counts = wts3.sum(-1)  # [S, G] samples per batch
        active = self.counts > 0  # [S, G]
        self.all_active = bool(active.all())
        self.partial = not bool((wts3 == 1).all())
        # Adam scalars per (epoch, step, group), in float64 on the host like torch.optim.Adam
        self.tcount = np.cumsum(np.tile(active, (epochs, 1)), axis=0).reshape(epochs, S, G)  # step counts
        tc = np.maximum(self.tcount, 1).astype(np.float64)
        self.active = np.broadcast_to(active, (epochs, S, G))
        self.step_size = np.where(self.active, lr / (1.0 - beta1 ** tc), 0.0)
        self.bc2_sqrt = np.sqrt(1.0 - beta2 ** tc)
        self.eps = np.full_like(self.bc2_sqrt, eps) if job.eps_mode == "torch" else eps / self.bc2_sqrt


class _Resetter:
    """The Freeze-SGD reset of every frozen network after a step, each network on its own
    posRand stream (``parameter_step_seed(reset_seeds[g, c], the group's step count, layer)`` and
    the entry's index in its nn.Linear weight), so a network's numbers do not depend on its job nor
    on the path: the numba kernel ``reset_nets`` or ``reset_torch_`` (the same values, on any
    device)."""

    def __init__(self, buf: _Buffers, job: XorJob, kernels: bool):
        G, C, Hp, d = buf.G, buf.C, buf.Hp, buf.d
        templates, column_reset, reset_eps = job.templates, job.column_reset, job.reset_eps
        dev = buf.flat.device
        self.W1T, self.w2 = buf.net[0], buf.net[2]
        self.T1 = templates["fc1.weight"].to(device=dev, dtype=torch.int8).transpose(2, 3).contiguous()
        self.T2 = templates["fc2.weight"].to(device=dev, dtype=torch.int8).contiguous()
        self.seeds = np.ascontiguousarray(job.reset_seeds, dtype=np.int64).reshape(G, C)
        self.eps = reset_eps
        self.G, self.C = G, C
        self.kernels = kernels
        if kernels:
            self.codes = np.array([CODES[r] if r is not None else -1 for r in column_reset], dtype=np.int64)
            self.arrays = (self.W1T.numpy(), self.w2.numpy(), self.T1.numpy(), self.T2.numpy())
            self.eps_np = self.arrays[0].dtype.type(reset_eps)
            return
        # templates per reset method (0 outside its columns); draws at index j*d + k of fc1.weight
        self.per_method = []
        for meth in sorted({r for r in column_reset if r is not None}):
            sel = torch.tensor([r == meth for r in column_reset], device=dev)
            self.per_method.append((meth, (self.T1 * sel.view(1, C, 1, 1)).contiguous(),
                                    (self.T2 * sel.view(1, C, 1)).contiguous()))
        self.index2 = torch.arange(Hp, device=dev, dtype=torch.int64)
        self.index1 = self.index2.view(1, Hp) * d + torch.arange(d, device=dev, dtype=torch.int64).view(d, 1)

    def __call__(self, steps: np.ndarray) -> None:
        """Reset after step ``steps[g]`` of each group g."""
        if self.kernels:
            kernels.reset_nets(*self.arrays, self.codes, self.eps_np, self.seeds, steps)
            return
        G, C = self.G, self.C
        # step seeds hashed on the host, draws on the device
        st = np.stack([parameter_step_seed(self.seeds, steps[:, None], layer) for layer in (0, 1)])
        st = torch.from_numpy(st).to(self.W1T.device, non_blocking=True)
        for meth, t1, t2 in self.per_method:
            reset_torch_(self.W1T, t1, meth, self.eps, st[0].view(G, C, 1, 1), self.index1, count=False)
            reset_torch_(self.w2, t2, meth, self.eps, st[1].view(G, C, 1), self.index2, count=False)

    def violations(self) -> torch.Tensor:
        """Template violations left in every network (a 0-d tensor; the check mode)."""
        return ((self.W1T * self.T1) < 0).sum() + ((self.w2 * self.T2) < 0).sum()


class _SignSwitch:
    """Per epoch, the fraction of each network's real weights whose sign changed, per layer
    (padding weights stay 0 and never change).  ``fused``: the numba kernel ``sign_switch``
    (CPU; int8 signs kept), else torch ops (any device); the same numbers."""

    def __init__(self, buf: _Buffers, widths, epochs, fused: bool = False):
        G, C, Hp, d = buf.G, buf.C, buf.Hp, buf.d
        dev = buf.flat.device
        self.W1T, self.w2 = buf.net[0], buf.net[2]
        self.fractions = torch.zeros(epochs, 2, G, C, dtype=torch.float32, device=dev)
        wmask = torch.zeros(C, Hp, dtype=torch.float32, device=dev)
        for c, h in enumerate(widths):
            wmask[c, :h] = 1
        self.denom1 = (wmask.sum(1) * d).view(1, C)
        self.denom2 = wmask.sum(1).view(1, C)
        self.fused = fused
        if fused:
            self.args = (self.W1T.numpy(), self.w2.numpy(), np.zeros(self.W1T.shape, np.int8),
                         np.zeros(self.w2.shape, np.int8), self.denom1[0].numpy(), self.denom2[0].numpy())
            self.fr = self.fractions.numpy()
            start = np.empty((2, G, C), np.float32)  # this first call only takes the starting signs
            kernels.sign_switch(*self.args, start[0], start[1])
            return
        self.prev1, self.prev2 = torch.sign(self.W1T), torch.sign(self.w2)

    def record(self, e: int) -> None:
        if self.fused:
            kernels.sign_switch(*self.args, self.fr[e, 0], self.fr[e, 1])
            return
        s1, s2 = torch.sign(self.W1T), torch.sign(self.w2)
        self.fractions[e, 0] = (s1 != self.prev1).sum((2, 3)).float() / self.denom1
        self.fractions[e, 1] = (s2 != self.prev2).sum(2).float() / self.denom2
        self.prev1, self.prev2 = s1, s2


# ----------------------------------------------------------------------------- the two paths
class _FusedPath:
    """One numba kernel call per optimizer step (every network's forward, backward and Adam
    update) and one per epoch for the validation pass.  Loss/accuracy records: float32 terms,
    float64 sums."""

    def __init__(self, buf: _Buffers, sched: _Schedule, job: XorJob):
        x_train, y_train, x_val, y_val = job.x_train, job.y_train, job.x_val, job.y_val
        G, C, Hp, d = buf.G, buf.C, buf.Hp, buf.d
        S, B = sched.S, sched.B
        T, n_max = x_train.shape[0], x_train.shape[1]
        dt = x_train.dtype
        beta1, beta2 = job.betas
        self.sched = sched
        self.x_np = x_train.reshape(T * n_max, d).contiguous().numpy()
        self.y_np = y_train.reshape(T * n_max).contiguous().numpy()
        self.widths = np.asarray(job.widths, dtype=np.int64)
        par = torch.get_num_threads() > 1
        self.step_kernel = kernels.step_parallel if par else kernels.step_serial
        self.val_kernel = kernels.val_parallel if par else kernels.val_serial
        # the sigmoid of the training step: a float64 exp in float64 runs (exact checks), a
        # float32 one (relative error < 1e-7, below float32 resolution of the result) otherwise
        self.f64 = dt == torch.float64
        # the kernels' argument tuples (kernels.py): net, grad = (w1t, b1, w2, b2),
        # flat = (params, m, v, grad, offs), batch = (x, y, rows, count)
        self.net = tuple(t.numpy() for t in buf.net)
        self.grads = tuple(t.numpy() for t in buf.grads)
        self.flat = (buf.flat.numpy(), buf.m.numpy(), buf.v.numpy(), buf.grad.numpy(), buf.offs.astype(np.int64))
        self.idx = sched.idx.numpy()
        self.count = sched.counts.astype(np.int64)  # [S, G]
        sc = np.empty(sched.tcount.shape, dtype=kernels.adam_scalars_dtype(np.float32 if dt == torch.float32
                                                                          else np.float64))
        sc["inv_count"] = 1.0 / np.maximum(sched.counts, 1)[None]
        sc["step_size"], sc["bc2_sqrt"], sc["eps"] = sched.step_size, sched.bc2_sqrt, sched.eps
        sc["one_minus_beta1"], sc["beta2"], sc["one_minus_beta2"] = 1 - beta1, beta2, 1 - beta2
        self.scalars = sc  # [E, S, G] records
        self.logits_t = torch.zeros(G, C, S, B, dtype=dt)  # training logits of the epoch (for the train loss)
        self.logits = self.logits_t.numpy()
        self.hits_t = torch.zeros(G, C, dtype=torch.int64)
        self.hits = self.hits_t.numpy()
        gt = torch.as_tensor(np.asarray(job.group_trial), device=x_val.device)
        self.xv = x_val.index_select(0, gt).transpose(1, 2).contiguous().numpy()  # [G, d, nv]
        self.yv = y_val.index_select(0, gt).contiguous().numpy()  # [G, nv]
        self.val_t = torch.zeros(2, G, C, dtype=torch.float64)
        self.val = self.val_t.numpy()
        self.train_loss_t = torch.zeros(G, C, dtype=torch.float64)
        self.train_loss = self.train_loss_t.numpy()
        self.gn = sched.gn.copy()
        self.gn_t = torch.as_tensor(sched.gn, dtype=dt).view(G, 1)

    def start_epoch(self) -> None:
        self.hits_t.zero_()

    def step(self, e: int, s: int) -> None:
        batch = (self.x_np, self.y_np, self.idx[e, s], self.count[s])
        self.step_kernel(batch, self.net, self.grads, self.flat, self.scalars[e, s], self.widths,
                         self.logits[:, :, s], self.hits, self.f64)

    def record_train(self, e: int, rec: torch.Tensor) -> None:
        """Keras-style train loss/accuracy of epoch e (each batch measured before its update)."""
        G, C, S, B = self.logits.shape
        kernels.train_loss(self.logits.reshape(G, C, S * B), self.y_np, self.idx[e], self.gn, self.train_loss)
        rec[0] = self.train_loss_t
        rec[1] = self.hits_t / self.gn_t

    def record_validation(self, rec: torch.Tensor) -> None:
        self.val_kernel(self.xv, self.yv, self.net, self.widths, self.val)
        rec[2:4] = self.val_t


class _TorchPath:
    """The same step as batched ``matmul``s and elementwise ops over the [group, column] axes,
    on any device; Adam in ``torch.optim.Adam``'s single-tensor arithmetic, masked per group when
    some groups sit out a step."""

    def __init__(self, buf: _Buffers, sched: _Schedule, job: XorJob):
        x_train, y_train, x_val, y_val = job.x_train, job.y_train, job.x_val, job.y_val
        G, C, Hp, d = buf.G, buf.C, buf.Hp, buf.d
        T, n_max = x_train.shape[0], x_train.shape[1]
        dev, dt = x_train.device, x_train.dtype
        betas = job.betas
        self.buf, self.sched, self.betas = buf, sched, betas
        self.x_flat = x_train.reshape(T * n_max, d).contiguous()
        self.y_flat = y_train.reshape(T * n_max).contiguous()
        if not sched.all_active:
            beta1, beta2 = betas
            act = sched.active
            self.adam_tab = torch.from_numpy(np.stack(
                [sched.step_size, sched.bc2_sqrt, sched.eps, act * (1 - beta1), np.where(act, beta2, 1.0),
                 act * (1 - beta2)], axis=2)).to(device=dev, dtype=dt)  # [E,S,6,G]
            self.elem_group = torch.cat([torch.arange(G, device=dev).repeat_interleave(s // G) for s in buf.sizes])
        self.w_t = torch.from_numpy(sched.weights.copy()).to(device=dev, dtype=dt)  # [S,G,B]
        # each sample's weight in its batch's mean loss
        self.lw_t = torch.from_numpy((sched.weights / np.maximum(sched.counts, 1)[..., None]).copy()).to(
            device=dev, dtype=dt)
        self.tr_loss = torch.zeros(G, C, dtype=dt, device=dev)
        self.tr_acc = torch.zeros(G, C, dtype=dt, device=dev)
        self.gn_t = torch.as_tensor(sched.gn, device=dev, dtype=dt).view(G, 1)
        gt = torch.as_tensor(np.asarray(job.group_trial), device=dev)
        self.xv = x_val.index_select(0, gt)  # [G, nv, d]
        yv = y_val.index_select(0, gt)  # [G, nv]
        nv = self.xv.shape[1]
        self.sv = (2 * yv - 1).view(G, 1, nv)  # BCE(z, y) = softplus(-(2y-1) z)
        self.chunk = max(1, min(G, (1 << 22) // max(1, nv * C * Hp * x_train.element_size())))

    def start_epoch(self) -> None:
        self.tr_loss.zero_()
        self.tr_acc.zero_()

    def step(self, e: int, s: int) -> None:
        self._gradients(e, s)
        self._adam(e, s)

    def _gradients(self, e: int, s: int) -> None:
        """Forward, Keras-style running train metrics (measured before the update) and the
        backward of each network's mean BCE into the gradient buffer."""
        W1T, b1, w2, b2 = self.buf.net
        gW1T, gb1, gw2, gb2 = self.buf.grads
        G, B, d = self.buf.G, self.sched.B, self.buf.d
        dt = self.x_flat.dtype
        ii = self.sched.idx[e, s].reshape(-1)
        Xb = self.x_flat.index_select(0, ii).view(G, B, d)
        yb = self.y_flat.index_select(0, ii).view(G, 1, B)
        pre = torch.matmul(Xb.unsqueeze(1), W1T).add_(b1.unsqueeze(2))  # [G,C,B,Hp]
        h = torch.relu(pre)
        z = torch.matmul(h, w2.unsqueeze(-1)).squeeze(-1).add_(b2.unsqueeze(-1))  # [G,C,B]
        bce = torch.nn.functional.softplus(z) - yb * z
        hit = ((z > 0) == (yb > 0.5)).to(dt)
        if self.sched.partial:
            ws = self.w_t[s].unsqueeze(1)  # [G,1,B]
            bce, hit = bce * ws, hit * ws
        self.tr_loss.add_(bce.sum(-1))
        self.tr_acc.add_(hit.sum(-1))
        dz = (torch.sigmoid(z) - yb).mul_(self.lw_t[s].unsqueeze(1))  # [G,C,B]
        torch.sum(dz, -1, out=gb2)
        gw2.copy_(torch.matmul(dz.unsqueeze(2), h).squeeze(2))
        dh = (dz.unsqueeze(-1) * w2.unsqueeze(2)).mul_(pre > 0)  # [G,C,B,Hp]
        gW1T.copy_(torch.matmul(Xb.transpose(1, 2).unsqueeze(1), dh))
        torch.sum(dh, 2, out=gb1)

    def _adam(self, e: int, s: int) -> None:
        """torch.optim.Adam's single-tensor update on the flat buffers, masked per group when
        some groups sit out this step."""
        flat, grad, m, v = self.buf.flat, self.buf.grad, self.buf.m, self.buf.v
        sched = self.sched
        if sched.all_active:
            beta1, beta2 = self.betas
            ss, bc2s, ee = float(sched.step_size[e, s, 0]), float(sched.bc2_sqrt[e, s, 0]), float(sched.eps[e, s, 0])
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            flat.addcdiv_(m, (v.sqrt() / bc2s).add_(ee), value=-ss)
        else:
            ss_, bc2s_, eps_, w1_, b2_, w2_ = self.adam_tab[e, s].index_select(1, self.elem_group).unbind(0)
            m.lerp_(grad, w1_)
            v.mul_(b2_).addcmul_(grad * w2_, grad)
            flat.sub_((m / (v.sqrt() / bc2s_).add_(eps_)).mul_(ss_))

    def record_train(self, e: int, rec: torch.Tensor) -> None:
        rec[0] = self.tr_loss / self.gn_t
        rec[1] = self.tr_acc / self.gn_t

    def record_validation(self, rec: torch.Tensor) -> None:
        """Validation loss and accuracy of every network, in chunks of groups (bounded memory)."""
        W1T, b1, w2, b2 = self.buf.net
        xv, sv, G = self.xv, self.sv, self.buf.G
        for g0 in range(0, G, self.chunk):
            g1 = min(G, g0 + self.chunk)
            hv = torch.matmul(xv[g0:g1].unsqueeze(1), W1T[g0:g1]).add_(b1[g0:g1].unsqueeze(2)).relu_()
            zv = torch.matmul(hv, w2[g0:g1].unsqueeze(-1)).squeeze(-1).add_(b2[g0:g1].unsqueeze(-1))
            rec[2, g0:g1] = _softplus_neg(zv * sv[g0:g1]).mean(-1)
            rec[3, g0:g1] = ((zv > 0) == (sv[g0:g1] > 0)).float().mean(-1)


def _softplus_neg(u: torch.Tensor) -> torch.Tensor:
    """``softplus(-u) = relu(-u) + log(1 + exp(-|u|))`` (the BCE of logit z with u = (2y-1) z)."""
    return torch.log(torch.exp(-u.abs()).add_(1)).add_((-u).clamp_min_(0))


__all__ = ["XorJob", "BatchedResult", "train_batched"]
