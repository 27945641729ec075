"""Training primitives shared by the experiments and by source pretraining (:mod:`polarity.transfer`):
the optimizer, one epoch per data permutation, evaluation, and the precision / memory format a
model computes in (:func:`compute_mode`).

Batches travel as they are stored (uint8 images) and are transformed on the device the model runs
on (:func:`polarity.data.images.to_device`).  Metrics accumulate on that device: an epoch of
:func:`fit` and a call of :func:`evaluate` each read the device once.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .data.images import to_device

PRECISIONS = ("fp32", "tf32", "bf16")


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused where this build supports it for the model's device and dtype."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _means(loss_sum: torch.Tensor, correct: torch.Tensor, n: int) -> tuple[float, float]:
    """(mean loss, accuracy) from the device accumulators in one read of the device; the same
    values as ``float(loss_sum) / n, int(correct) / n``."""
    loss, hits = torch.stack([loss_sum.double(), correct.double()]).tolist()
    return loss / n, int(hits) / n


def fit(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None, perms: Sequence[torch.Tensor],
        batch_size: int, device: str = "cpu",
        on_epoch: Callable[[int, float, float], None] | None = None) -> list[tuple[float, float]]:
    """Train one epoch per permutation; returns (train loss, train acc) per epoch.

    ``x`` is uint8 (transformed per batch by ``transform``) or already float (``transform=None``),
    on ``device`` or on the host (each batch is then sent to ``device`` before its transform);
    ``y`` lives with ``x``.  The running loss/accuracy are accumulated on the device: one host
    sync per epoch.
    """
    n = len(y)
    out = []
    for e, perm in enumerate(perms, 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        perm = to_device(perm, x.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = to_device(x[idx], device), to_device(y[idx], device)
            if transform is not None:
                xb = transform(xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
        tl, ta = _means(loss_sum, correct, n)
        out.append((tl, ta))
        if on_epoch is not None:
            on_epoch(e, tl, ta)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             transform: Callable[[torch.Tensor], torch.Tensor] | None, device: str = "cpu",
             batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y) in eval mode (one host sync)."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(y), batch_size):
        xb, yb = to_device(x[i:i + batch_size], device), to_device(y[i:i + batch_size], device)
        if transform is not None:
            xb = transform(xb)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    return _means(loss_sum, correct, max(len(y), 1))


# ---------------------------------------------------------------------- precision and memory format

def _tf32_settings() -> list[tuple[object, str, object, object]]:
    """(object, attribute, TF32 value, strict float32 value) for matmuls and convolutions, in the
    API this torch build has (the newer ``fp32_precision`` must not be mixed with ``allow_tf32``)."""
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision") and hasattr(b.cudnn, "conv"):
        return [(obj, "fp32_precision", "tf32", "ieee")
                for obj in (b.cuda.matmul, b.cudnn.conv, getattr(b.cudnn, "rnn", None))
                if obj is not None]
    return [(b.cuda.matmul, "allow_tf32", True, False), (b.cudnn, "allow_tf32", True, False)]


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def compute_mode(model: torch.nn.Module, device: str | torch.device, precision: str = "fp32",
                 channels_last: bool = False) -> Iterator[torch.nn.Module]:
    """Run ``model`` in a precision and memory format while the block runs (the image
    experiments' throughput options ``precision`` and ``channels_last``); leaving restores
    everything.

    * ``fp32``: float32 arithmetic throughout.  On CUDA, TF32 is switched off for matmuls and
      convolutions (PyTorch allows it for convolutions by default); the paper's precision.
    * ``tf32``: float32 tensors, TF32 tensor-core matmuls and convolutions on CUDA.
    * ``bf16``: every forward pass of ``model`` under ``torch.autocast(bfloat16)`` (forward hooks
      on ``model``), its output cast back to float32: the loss, the gradients' accumulation into
      the float32 parameters, the optimizer and the Freezer stay float32.
    * ``channels_last``: 4-d parameters (and so the convolutions' outputs) in NHWC layout, and
      4-d inputs converted on the way in.  Enter the block before the optimizer's first step and
      keep the optimizer inside it: optimizer state takes its parameter's layout when created.

    On the CPU, ``fp32`` without channels-last touches nothing (CPU numbers stay bit-identical);
    ``bf16`` and ``channels_last`` work there too (slowly), which is how the tests check them.
    """
    check_precision(precision)
    device = torch.device(device)
    flags = _tf32_settings() if device.type == "cuda" else []
    saved = [(obj, name, getattr(obj, name)) for obj, name, _, _ in flags]
    handles = []
    try:
        for obj, name, tf32, ieee in flags:
            setattr(obj, name, tf32 if precision == "tf32" else ieee)
        if channels_last:
            model.to(memory_format=torch.channels_last)
            handles.append(model.register_forward_pre_hook(_to_channels_last))
        if precision == "bf16":
            handles += _autocast_hooks(model, device.type)
        yield model
    finally:
        for h in reversed(handles):
            h.remove()
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def _to_channels_last(module, args):
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def _autocast_hooks(model: torch.nn.Module, device_type: str) -> list:
    """Forward hooks that run ``model``'s forward under bfloat16 autocast and return float32."""
    stack: list[torch.autocast] = []

    def enter(module, args):
        ctx = torch.autocast(device_type, dtype=torch.bfloat16)
        ctx.__enter__()
        stack.append(ctx)

    def leave(module, args, output):
        stack.pop().__exit__(None, None, None)
        return output.float() if isinstance(output, torch.Tensor) else output

    return [model.register_forward_pre_hook(enter),
            model.register_forward_hook(leave, always_call=True)]


__all__ = ["PRECISIONS", "make_optimizer", "fit", "evaluate", "compute_mode", "check_precision"]
