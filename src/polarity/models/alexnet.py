"""AlexNet in torchvision's layout (so its ImageNet weights load) and a compact AlexNet-style
network for small inputs.

How the 10-class head is attached to torchvision's AlexNet (``alexnet(head=...)``):

* ``head="append"`` (default; the reference's choice, SPEC §5): torchvision's 1000-way layer
  ``classifier.6`` is kept as a hidden layer followed by a ReLU (``classifier.7``), and a new
  ``Linear(1000, num_classes)`` is added as ``classifier.8``. Every ImageNet parameter has a
  counterpart; the head is ``classifier.8.{weight,bias}``. 61,110,850 parameters for 10 classes.
* ``head="replace"``: ``classifier.6`` becomes ``Linear(4096, num_classes)``; the ImageNet
  ``classifier.6`` has no counterpart and is dropped. 57,044,810 parameters for 10 classes.

In both, ``head_names(model)`` lists the new head's parameters (no pretrained counterpart: they
keep their random initialisation and their random signs in the polarity conditions).

``compact_alexnet``: five 3x3/5x5 convolutions with ReLU and three max-pools, an adaptive
average pool to ``in_size // 8``, then three dense layers (fc6, fc7 with dropout 0.5, head),
named like torchvision's (``features.*``, ``classifier.*``) so templates read the same. Channel
widths scale with ``width``. At ``width=1`` and 32x32 inputs: 545,482 parameters and ~20M
multiply-adds per image (torchvision's AlexNet at 227x227: 61M and ~0.7G). The forward pass
converts its input to channels-last memory format (``channels_last=True``), which makes the
CPU convolutions and max-pools about 1.4x faster; results are the same up to float rounding.

``init_glorot_`` is the Keras default initialisation the reference uses (SPEC §5): convolution
kernels Glorot normal (a normal truncated at two standard deviations, rescaled so the standard
deviation is sqrt(2 / (fan_in + fan_out))), dense kernels Glorot uniform
(U(-sqrt(6 / (fan_in + fan_out)), +...)), biases zero.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["alexnet", "compact_alexnet", "init_glorot_", "imagenet_state_dict", "head_names",
           "HEADS", "CompactAlexNet"]

HEADS = ("append", "replace")
_HEAD_ATTR = "polarity_head"  # module names (prefixes) of the new head, stored on the model
_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated at +-2 (Keras' correction)


def alexnet(num_classes: int = 10, head: str = "append", dropout: float = 0.5) -> nn.Module:
    """torchvision's AlexNet with a ``num_classes``-way head attached as ``head`` says (see the
    module docstring). Random (torchvision default) initialisation: call ``init_glorot_`` for the
    reference's, or ``polarity.transfer.transfer_weights`` for pretrained weights."""
    from torchvision.models import alexnet as tv_alexnet

    _check_classes(num_classes)
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
    model = tv_alexnet(weights=None, num_classes=1000, dropout=dropout)
    if head == "append":
        model.classifier.append(nn.ReLU(inplace=True))          # classifier.7
        model.classifier.append(nn.Linear(1000, num_classes))  # classifier.8
        setattr(model, _HEAD_ATTR, ("classifier.8",))
    else:
        model.classifier[6] = nn.Linear(4096, num_classes)
        setattr(model, _HEAD_ATTR, ("classifier.6",))
    return model


class CompactAlexNet(nn.Module):
    """AlexNet-style 5-conv + 3-dense network for small inputs (see the module docstring)."""

    def __init__(self, num_classes: int = 10, in_size: int = 32, width: float = 1.0,
                 in_channels: int = 3, dropout: float = 0.5, channels_last: bool = True):
        super().__init__()
        self.channels_last = bool(channels_last)
        _check_classes(num_classes)
        if int(in_size) < 8:
            raise ValueError(f"in_size must be >= 8 (three 2x2 pools), got {in_size}")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        c = [max(1, round(k * width)) for k in (32, 64, 96, 96, 64)]
        hidden = max(1, round(256 * width))
        pool = max(1, int(in_size) // 8)
        self.in_size, self.width, self.in_channels = int(in_size), float(width), int(in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c[0], kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c[0], c[1], kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c[1], c[2], kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(c[4] * pool * pool, hidden), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        setattr(self, _HEAD_ATTR, ("classifier.6",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


def compact_alexnet(num_classes: int = 10, in_size: int = 32, width: float = 1.0,
                    in_channels: int = 3, dropout: float = 0.5, channels_last: bool = True) -> CompactAlexNet:
    """The compact AlexNet-style network (see the module docstring)."""
    return CompactAlexNet(num_classes=num_classes, in_size=in_size, width=width,
                          in_channels=in_channels, dropout=dropout, channels_last=channels_last)


def _check_classes(num_classes) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")


def head_names(model: nn.Module) -> tuple[str, ...]:
    """Parameter names of the model's new head (no pretrained counterpart). For models built
    here this is recorded at construction; for any other model, the last ``nn.Linear``."""
    prefixes = getattr(model, _HEAD_ATTR, None)
    if prefixes is None:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear layer to call its head")
        prefixes = (linears[-1],)
    return tuple(n for n, _ in model.named_parameters()
                 if any(n == p or n.startswith(p + ".") for p in prefixes))


@torch.no_grad()
def init_glorot_(model: nn.Module, seed: int | None = None,
                 generator: torch.Generator | None = None) -> nn.Module:
    """Keras-default initialisation in place (see the module docstring); returns ``model``.
    Deterministic given ``seed`` or ``generator`` (the generator must live on the CPU; values
    are drawn there and copied to the parameters' device)."""
    if generator is not None and seed is not None:
        raise ValueError("pass seed or generator, not both")
    if generator is None:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
    for _, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            w = m.weight
            fan_in, fan_out = _keras_fans(w)
            buf = torch.empty(w.shape, dtype=torch.float32)
            if isinstance(m, nn.Linear):
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                buf.uniform_(-limit, limit, generator=generator)
            else:
                std = math.sqrt(2.0 / (fan_in + fan_out)) / _TRUNC_STD
                nn.init.trunc_normal_(buf, 0.0, std, -2 * std, 2 * std, generator=generator)
            w.copy_(buf)
            if m.bias is not None:
                m.bias.zero_()
    return model


def _keras_fans(w: torch.Tensor) -> tuple[int, int]:
    """Keras' fans: dense [out, in] -> (in, out); conv [out, in, *k] -> (in*k, out*k)."""
    receptive = math.prod(w.shape[2:]) if w.dim() > 2 else 1
    return int(w.shape[1]) * receptive, int(w.shape[0]) * receptive


def imagenet_state_dict(weights: str | os.PathLike = "IMAGENET1K_V1") -> dict[str, torch.Tensor]:
    """ImageNet AlexNet weights as a state dict (torchvision layout, 1000-way classifier.6).

    ``weights``: a torchvision weights name (``"IMAGENET1K_V1"``; downloaded once into torch's
    hub cache, ``$TORCH_HOME``) or the path of a local checkpoint holding a state dict, or a dict
    with a ``"state_dict"`` (or ``"model"``) entry. Without internet and without a cached copy the
    torchvision path fails with a message saying so."""
    path = Path(os.fspath(weights)).expanduser()
    looks_like_path = isinstance(weights, os.PathLike) or path.suffix in (".pt", ".pth", ".ckpt", ".bin") \
        or os.sep in os.fspath(weights) or path.exists()
    if looks_like_path:
        return _load_checkpoint(path)
    from torchvision.models import AlexNet_Weights

    try:
        w = AlexNet_Weights[str(weights)]
    except KeyError:
        raise ValueError(f"unknown weights {weights!r}: not a file and not one of "
                         f"{[x.name for x in AlexNet_Weights]}") from None
    try:
        return dict(w.get_state_dict(progress=False))
    except Exception as e:  # URLError, HTTPError, OSError, RuntimeError (hash) ...
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"could not get torchvision's AlexNet {w.name} weights ({type(e).__name__}: {e}). They are "
            f"downloaded from {w.url} into {hub}, which needs internet the first time. Offline, copy "
            f"that file there, or pass the path of a local checkpoint instead (e.g. a file saved with "
            f"torch.save(model.state_dict(), 'alexnet.pth')).") from e


def _load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(obj, nn.Module):  # pragma: no cover - weights_only forbids this
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor) or a dict with a "
                         f"'state_dict' entry, got {type(obj).__name__}")
    return {_strip_prefix(k): v for k, v in obj.items()}


def _strip_prefix(name: str) -> str:
    for p in ("module.", "_orig_mod."):
        while name.startswith(p):
            name = name[len(p):]
    return name
