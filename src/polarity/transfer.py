"""Transfer sources: where a transferred polarity template (and transferred weights) come from,
and how they are applied to a target model.

A source is named by a string: ``imagenet`` (torchvision's AlexNet ``IMAGENET1K_V1``; needs
``arch="alexnet"``), ``imagenet:/path/to/checkpoint.pth`` (the same architecture from a local
file), the name of a shipped source network or the path of a source directory
(:mod:`polarity.sources`: trained once with a documented recipe, verified on load), or
``pretrained:<dataset>`` (the target's own architecture trained here on another dataset,
cached under ``polarity.files.cache_root()/sources/<hash>/``).  :func:`polarity_template` maps a
source's signs onto a target (the new head keeps its own signs); :func:`transfer_weights` copies
the source's weights into it except the head.  The cache layout and the controlled comparison
are described in ``docs/images.md``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from .data.images import first_n, load_dataset
from .files import atomic_write, cache_root
from .models import build_model, head_names, imagenet_state_dict, init_glorot_
from .sources import SourceError, read_source_dir
from .sources import resolve as resolve_source
from .sources.zoo import as_path
from .sources import shipped as shipped_sources
from .template import Template
from .training import evaluate, fit, make_optimizer

DATASET_NAMES = {"fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
SOURCE_FORMAT = ("'imagenet', 'imagenet:/path/to/checkpoint.pth', a shipped source name "
                 "('polarity source list'), a source directory, 'pretrained:<dataset>' "
                 f"(datasets: {', '.join(DATASET_NAMES)}) or 'none'")
CACHE_VERSION = 1


class TransferError(ValueError):
    """A bad or unusable transfer source."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source string."""

    kind: str  # "imagenet" | "directory" | "pretrained" | "none"
    text: str
    path: str | None = None  # imagenet:<path>, or the source directory
    dataset: str | None = None  # pretrained:<dataset>

    @property
    def label(self) -> str:
        """Short name used in figure labels: 'IN' for ImageNet, else the dataset's name."""
        if self.kind == "imagenet":
            return "IN"
        if self.kind == "pretrained":
            return DATASET_NAMES.get(self.dataset, self.dataset)
        return "none"


def parse_source(text: str) -> SourceSpec:
    """Parse a source string; raise :class:`TransferError` saying what is wrong."""
    if not isinstance(text, str):
        raise TransferError(f"transfer source must be a string, got {type(text).__name__}")
    s = text.strip()
    if s.lower() in ("", "none"):
        return SourceSpec("none", s)
    if s.lower() == "imagenet":
        return SourceSpec("imagenet", s)
    kind, sep, rest = s.partition(":")
    if sep and kind.lower() == "imagenet":
        if not rest:
            raise TransferError(f"transfer source {text!r}: missing checkpoint path after 'imagenet:'")
        return SourceSpec("imagenet", s, path=rest)
    if sep and kind.lower() == "pretrained":
        ds = rest.strip().lower()
        if ds not in DATASET_NAMES:
            raise TransferError(f"transfer source {text!r}: unknown source dataset {rest!r}; "
                                f"known: {', '.join(DATASET_NAMES)}")
        return SourceSpec("pretrained", s, dataset=ds)
    try:
        return SourceSpec("directory", s, path=str(resolve_source(s)))
    except SourceError as e:
        if s in shipped_sources() or as_path(s).exists():
            raise TransferError(f"transfer source {text!r}: {e}") from None
    raise TransferError(f"unknown transfer source {text!r}; expected {SOURCE_FORMAT}")


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines a ``pretrained:<dataset>`` source network."""

    n: int = 10000  # first n training images of the source dataset
    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    val_size: int = 2000  # source accuracy is measured on the first val_size test images
    data_root: str | None = None
    data_source: str = "auto"


@dataclass
class Source:
    """A loaded source: the source network's state dict and its sign template."""

    spec: SourceSpec
    arch: str
    state_dict: dict[str, torch.Tensor]
    template: Template
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """'IN' for ImageNet; for a pretrained source the source data's label (e.g.
        'CIFAR-10 (JPEG copy)' when it was trained on the offline JPEG copy)."""
        return self.info.get("dataset_label") or self.spec.label

    def polarity_template(self, model: torch.nn.Module, head: Iterable[str] | None = None) -> Template:
        return polarity_template(self.template, model, head=head)

    def transfer_weights(self, model: torch.nn.Module, head: Iterable[str] | None = None) -> list[str]:
        return transfer_weights(self.state_dict, model, head=head)


# ----------------------------------------------------------------------------- applying a source

def _head(model: torch.nn.Module, head: Iterable[str] | None) -> set[str]:
    return set(head) if head is not None else set(head_names(model))


def polarity_template(source_template: Template, model: torch.nn.Module,
                      head: Iterable[str] | None = None) -> Template:
    """Map a source template onto ``model``.

    Every parameter the model's default template constrains gets the source's signs, except the
    head (``head``; default ``polarity.models.head_names(model)``) and parameters the source
    lacks, which keep the signs of the model's *current* weights (its initialisation).  Source
    entries that are 0 (unconstrained) also keep the model's own sign.  A source parameter whose
    shape differs from the model's raises ``ValueError`` naming both shapes (from
    ``Template.adapt``).
    """
    head_set = _head(model, head)
    own = Template.from_module(model)
    drop = tuple(k for k in source_template.keys() if k in head_set or k not in own)
    mapped = source_template.adapt(model, drop=drop, missing="free")
    signs = {}
    for name, t_own in own.items():
        t_own = t_own.to(torch.int8)
        if name in head_set or name not in mapped:
            signs[name] = t_own
            continue
        t = mapped[name].to(torch.int8).to(t_own.device)
        signs[name] = torch.where(t != 0, t, t_own)
    meta = dict(source_template.meta)
    meta["adapted"] = {"own_signs": sorted(k for k in own if k in head_set or k not in mapped)}
    return Template(signs, meta)


@torch.no_grad()
def transfer_weights(state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module,
                     head: Iterable[str] | None = None) -> list[str]:
    """Copy a source's weights into ``model`` in place, except its head.

    Every entry of ``model.state_dict()`` (parameters and buffers) other than the head (``head``;
    default ``polarity.models.head_names(model)``) is taken from ``state_dict``.  Entries of
    ``state_dict`` the model lacks (e.g. ImageNet's ``classifier.6`` under ``head="replace"``)
    are ignored.  A model entry that ``state_dict`` lacks, or a shape mismatch, raises
    ``ValueError`` naming it (and both shapes) before anything is copied.  Returns the copied
    names in the model's order."""
    head_set = _head(model, head)
    target = {k: v for k, v in model.state_dict(keep_vars=True).items() if k not in head_set}
    missing = [k for k in target if k not in state_dict]
    if missing:
        raise ValueError(f"the source lacks {len(missing)} of the model's entries: {missing[:6]}"
                         + (" ..." if len(missing) > 6 else ""))
    bad = [f"{k}: source {tuple(state_dict[k].shape)} vs target {tuple(t.shape)}"
           for k, t in target.items() if tuple(state_dict[k].shape) != tuple(t.shape)]
    if bad:
        raise ValueError("shape mismatch: " + "; ".join(bad[:6]))
    for k, t in target.items():
        t.copy_(state_dict[k].to(device=t.device, dtype=t.dtype))
    return list(target)


# ----------------------------------------------------------------------------- cache

def source_key(spec: SourceSpec, arch: str, model_kwargs: Mapping[str, Any],
               pretrain: PretrainConfig) -> dict[str, Any]:
    cfg = dataclasses.asdict(pretrain)
    cfg.pop("data_root", None)  # where the files live does not change the network
    return {"version": CACHE_VERSION, "source": spec.text, "arch": arch,
            "model": {k: model_kwargs[k] for k in sorted(model_kwargs)}, "pretrain": cfg}


def source_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(directory: Path):
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_MEMO: dict[str, Source] = {}


def _read_cached(d: Path, spec: SourceSpec, arch: str) -> Source | None:
    meta_p, model_p, tmpl_p = d / "meta.json", d / "model.pt", d / "template.pol"
    if not meta_p.exists():
        return None
    try:
        meta = json.loads(meta_p.read_text())
        state = torch.load(model_p, map_location="cpu", weights_only=True)
        template = Template.load(tmpl_p)
    except Exception:  # a damaged cache entry is recomputed, never trusted
        return None
    meta["cached"] = True
    meta["cache_dir"] = str(d)
    return Source(spec, arch, state, template, meta)


def load_source(source: str | SourceSpec, arch: str = "compact", *, num_classes: int | None = 10,
                model_kwargs: Mapping[str, Any] | None = None,
                pretrain: PretrainConfig | None = None, device: str = "cpu",
                log: Callable[[str], None] | None = None,
                cache_dir: str | os.PathLike | None = None) -> Source:
    """Load (or pretrain and cache) a source for a target of architecture ``arch``.

    ``model_kwargs`` are passed to ``polarity.models.build_model`` for the source network of a
    ``pretrained:`` source (e.g. ``in_size``, ``width``); the source network has ``num_classes``
    outputs (``None``: as many as its dataset has classes; the head is never transferred, so a
    target with another number of classes can use it).  ``imagenet`` needs ``arch="alexnet"``.  ``cache_dir`` overrides the cache root
    (default :func:`polarity.files.cache_root`); entries live in ``<root>/sources/<hash>/``.
    """
    spec = source if isinstance(source, SourceSpec) else parse_source(source)
    model_kwargs = dict(model_kwargs or {})
    if spec.kind == "none":
        raise TransferError("transfer source 'none' has no template or weights; the polarity and "
                            "weight conditions need a source (" + SOURCE_FORMAT + ")")
    if spec.kind == "imagenet":
        return _load_imagenet(spec, arch)
    if spec.kind == "directory":
        return load_source_dir(spec, arch, model_kwargs)
    pretrain = pretrain or PretrainConfig()
    key = source_key(spec, arch, {**model_kwargs, "num_classes": num_classes}, pretrain)
    h = source_hash(key)
    d = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / "sources" / h
    if str(d) in _MEMO:
        return _MEMO[str(d)]
    src = _read_cached(d, spec, arch)
    if src is None:
        with _locked(d):
            src = _read_cached(d, spec, arch)  # another process may have finished meanwhile
            if src is None:
                src = _pretrain(spec, arch, num_classes, model_kwargs, pretrain, key, d, device, log)
    _MEMO[str(d)] = src
    return src


def check_source_dir(spec: SourceSpec, arch: str, model_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of a source directory, checked against the target's architecture: weights
    and signs only transfer between networks of one shape (the head excepted)."""
    from .sources import read_manifest

    try:
        m = read_manifest(spec.path)
    except SourceError as e:
        raise TransferError(str(e)) from None
    theirs = {k: v for k, v in m["model"].items() if k != "num_classes"}
    ours = {k: v for k, v in model_kwargs.items() if k != "num_classes"}
    if m["arch"] != arch or any(theirs.get(k) != v for k, v in ours.items()):
        raise TransferError(f"source {spec.text!r} is a {m['arch']} {theirs}; the target is a {arch} "
                            f"{ours}: train a matching source ('polarity source train ...') or "
                            "change the target's architecture")
    return m


def load_source_dir(spec: SourceSpec, arch: str, model_kwargs: Mapping[str, Any]) -> Source:
    """A source directory (shipped or trained with ``polarity source train``), verified."""
    if spec.path in _MEMO:
        return _MEMO[spec.path]
    check_source_dir(spec, arch, model_kwargs)
    try:
        net = read_source_dir(spec.path)
    except SourceError as e:
        raise TransferError(str(e)) from None
    m = net.manifest
    info = {"dataset_label": m["dataset_label"], "source_dataset": m["dataset"], "name": net.name,
            "source_dir": str(net.path), "val_acc": m.get("test_accuracy"),
            "val_images": m.get("test_images"), "command": m.get("command")}
    src = Source(spec, m["arch"], net.state_dict, net.template, info)
    _MEMO[spec.path] = src
    return src


def clear_memo() -> None:
    """Forget sources loaded in this process (the disk cache stays)."""
    _MEMO.clear()


def _load_imagenet(spec: SourceSpec, arch: str) -> Source:
    if arch != "alexnet":
        raise TransferError(f"transfer source {spec.text!r} holds torchvision AlexNet weights and "
                            f"needs arch 'alexnet' (got {arch!r}); for the compact network use "
                            "'pretrained:<dataset>'")
    if spec.path is not None:
        p = Path(spec.path).expanduser()
        if not p.is_file():
            raise TransferError(f"transfer source {spec.text!r}: checkpoint file {str(p)!r} not found")
        try:
            state = imagenet_state_dict(str(p))
        except Exception as e:
            raise TransferError(f"transfer source {spec.text!r}: cannot read checkpoint: {e}") from e
    else:
        try:
            state = imagenet_state_dict("IMAGENET1K_V1")
        except Exception as e:
            raise TransferError(
                "transfer source 'imagenet': cannot get torchvision's AlexNet IMAGENET1K_V1 weights "
                f"({type(e).__name__}: {e}); without internet, download alexnet-owt-7be5be79.pth "
                "elsewhere and pass 'imagenet:/path/to/alexnet-owt-7be5be79.pth'") from e
    state = {k: v.detach().to("cpu", torch.float32) for k, v in state.items()}
    template = Template(Template.from_module(state), {"source": spec.text, "arch": arch})
    return Source(spec, arch, state, template,
                  {"source": spec.text, "arch": arch, "cached": False})


def _pretrain(spec: SourceSpec, arch: str, num_classes: int | None, model_kwargs: Mapping[str, Any],
              cfg: PretrainConfig, key: Mapping[str, Any], d: Path, device: str,
              log: Callable[[str], None] | None) -> Source:
    t0 = time.perf_counter()
    data = load_dataset(spec.dataset, root=cfg.data_root, source=cfg.data_source)
    if num_classes is None:
        num_classes = len(data.classes)
    if len(data.classes) != num_classes:
        raise TransferError(f"source dataset {spec.dataset!r} has {len(data.classes)} classes; the "
                            f"target needs a source network with {num_classes} outputs")
    if log:
        log(f"pretraining {arch} on {data.label} (n={cfg.n}, {cfg.epochs} epochs) for source "
            f"{spec.text!r}; cache {d}")
    x, y = first_n(data.train_x, data.train_y, cfg.n)
    vx, vy = first_n(data.test_x, data.test_y, cfg.val_size)
    transform = data.transform(size=model_kwargs.get("in_size"), rgb=True)
    model = build_model(arch, num_classes, **model_kwargs)
    init_glorot_(model, cfg.seed)
    model.to(device)
    opt = make_optimizer(model, cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    perms = [torch.randperm(len(y), generator=g) for _ in range(cfg.epochs)]
    torch.manual_seed(cfg.seed)

    def on_epoch(epoch: int, loss: float, acc: float) -> None:
        log(f"pretraining {spec.text!r}: epoch {epoch}/{cfg.epochs}, train loss {loss:.4f}, "
            f"train acc {acc:.3f} ({time.perf_counter() - t0:.0f}s)")

    history = fit(model, opt, x, y, transform, perms, cfg.batch_size, device=device,
                  on_epoch=on_epoch if log else None)
    val_loss, val_acc = evaluate(model, vx, vy, transform, device=device)
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    template = Template.from_module(state)
    meta = {"key": dict(key), "source": spec.text, "arch": arch, "dataset_label": data.label,
            "train_loss": [h[0] for h in history], "train_acc": [h[1] for h in history],
            "val_loss": val_loss, "val_acc": val_acc, "val_size": int(len(vy)),
            "pretrain_s": time.perf_counter() - t0, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write(d / "model.pt", lambda p: torch.save(state, p))
    template = Template(template, {"source": spec.text, "arch": arch, "hash": d.name})
    template.save(d / "template.pol")  # atomic (temporary file + rename)
    atomic_write(d / "meta.json", json.dumps(meta, indent=1))
    if log:
        log(f"source {spec.text!r}: {data.label} val acc {val_acc:.3f} after "
            f"{meta['pretrain_s']:.0f}s")
    meta = {**meta, "cached": False, "cache_dir": str(d)}
    return Source(spec, arch, state, template, meta)
