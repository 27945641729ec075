"""Loading a transfer source for a target network, and applying it.

Every source string (:mod:`polarity.sources.spec`) resolves to one :class:`Source` value: a
source network's state dict and its sign template, plus what is known about it (``info``).

* a shipped source or a source directory is read and verified (:func:`read_source_dir`: the
  files' sha256, the manifest's field types, finite weights, a template that is exactly the
  weights' signs) and checked against the target's architecture;
* ``pretrained:<dataset>[,field=value...]`` is trained by :func:`train_source` with the recipe
  the string names (the target's architecture) and written by :func:`write_source_dir` into
  ``<cache root>/sources/<hash>/``, a source directory like any other; the next load reads it
  from there (a damaged entry is trained again, never trusted);
* ``imagenet`` / ``imagenet:<checkpoint>`` is torchvision's AlexNet.

The same-dataset guard: with ``target_dataset`` given, a source trained on the target's own
dataset (:func:`polarity.sources.spec.same_dataset`) is refused unless ``allow_same_dataset=True``
(an oracle polarity, an upper bound, never an ordinary transfer).

:func:`polarity_template` maps a source's signs onto a target (the new head keeps its own
signs); :func:`transfer_weights` copies the source's weights into it except the head.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from ..files import cache_root
from ..models import head_names, imagenet_state_dict
from ..template import Template
from .directory import SourceError, read_manifest, read_source_dir, write_source_dir
from .spec import SOURCE_FORMAT, SourceSpec, TransferError, parse_source, same_dataset

CACHE_VERSION = 2  # 2: pretrained sources are source directories made by the source recipe


@dataclass(frozen=True)
class PretrainConfig:
    """Defaults for a ``pretrained:`` source's recipe from a caller (the image experiments'
    ``pretrain_n``/``pretrain_epochs``): ``n`` becomes the recipe's ``train_n`` (first n training
    images), ``epochs``, ``seed``, ``data_root`` and ``data_source`` its fields of the same names;
    ``None`` leaves the recipe's default, and a ``field=value`` in the source string wins over all
    of them.  ``batch_size``, ``lr`` and ``val_size`` belonged to the old Adam pretraining and are
    accepted for its callers but not used: the recipe has its own (set them in the source string,
    e.g. ``pretrained:cifar10,lr=0.02``), and it measures accuracy on the whole test split."""

    n: int | None = None
    epochs: int | None = None
    batch_size: int | None = None  # not used (see above)
    lr: float | None = None        # not used (see above)
    seed: int | None = None
    val_size: int | None = None    # not used (see above)
    data_root: str | None = None
    data_source: str | None = None

    def recipe_defaults(self) -> dict[str, Any]:
        used = {"n": "train_n", "epochs": "epochs", "seed": "seed", "data_root": "data_root",
                "data_source": "data_source"}
        return {used[k]: v for k, v in dataclasses.asdict(self).items() if k in used and v is not None}


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
        """'IN' for ImageNet; else what the source's manifest says its data was (e.g.
        'CIFAR-10 (JPEG copy)')."""
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

def source_key(recipe, num_classes: int | None = None) -> dict[str, Any]:
    """What determines a ``pretrained:`` source network: its whole recipe (where the data files
    live aside)."""
    r = dataclasses.asdict(recipe)
    r.pop("data_root", None)
    return {"version": CACHE_VERSION, "recipe": r}


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


def clear_memo() -> None:
    """Forget sources loaded in this process (the disk cache stays)."""
    _MEMO.clear()


def _source_from_dir(spec: SourceSpec, path: Path, **extra) -> Source:
    try:
        net = read_source_dir(path)
    except SourceError as e:
        raise TransferError(str(e)) from None
    m = net.manifest
    info = {"dataset_label": m["dataset_label"], "source_dataset": m["dataset"], "name": net.name,
            "source_dir": str(net.path), "val_acc": m.get("test_accuracy"),
            "val_images": m.get("test_images"), "command": m.get("command"),
            "init_agreement": m.get("init_agreement"), **extra}
    return Source(spec, m["arch"], net.state_dict, net.template, info)


def _read_cached(spec: SourceSpec, d: Path) -> Source | None:
    if not (d / "manifest.json").is_file():
        return None
    try:
        return _source_from_dir(spec, d, cached=True, cache_dir=str(d))
    except (TransferError, OSError):  # a damaged cache entry is trained again, never trusted
        return None


def pretrained_dir(spec: SourceSpec, recipe, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the cached source directory of ``recipe`` lives."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "sources" / source_hash(source_key(recipe))


def _guard(spec: SourceSpec, source_dataset: str | None, target_dataset: str | None,
           allow_same_dataset: bool) -> None:
    if target_dataset is None or source_dataset is None or allow_same_dataset:
        return
    if same_dataset(source_dataset, target_dataset):
        raise TransferError(f"source {spec.text!r} was trained on {source_dataset!r}, which holds the "
                            f"target dataset {target_dataset!r}'s own training images: transfer from "
                            "another dataset, or pass allow_same_dataset=True for an oracle (upper "
                            "bound) polarity")


def load_source(source: str | SourceSpec, arch: str = "compact", *, num_classes: int | None = None,
                model_kwargs: Mapping[str, Any] | None = None,
                pretrain: PretrainConfig | Mapping[str, Any] | None = None, device: str = "cpu",
                log: Callable[[str], None] | None = None,
                cache_dir: str | os.PathLike | None = None,
                target_dataset: str | None = None, allow_same_dataset: bool = False) -> Source:
    """Load (or train and cache) a source for a target of architecture ``arch``.

    ``model_kwargs`` (``in_size``, ``width``) are the target's and must match a source
    directory's; a ``pretrained:`` source is trained with them.  ``pretrain`` gives defaults for
    the recipe of a ``pretrained:`` source (a :class:`PretrainConfig` or a mapping of recipe
    fields; the string's own fields win).  The source network has as many outputs as its dataset
    has classes (its head is never transferred); ``num_classes`` is accepted for old callers and
    not used.  ``cache_dir`` overrides the cache root (default :func:`polarity.files.cache_root`).
    ``target_dataset``: the dataset the source is for; a source trained on it is refused unless
    ``allow_same_dataset`` (see the module docstring).  ``device`` is accepted for old callers:
    sources are trained on the CPU by the recipe.
    """
    del num_classes, device
    spec = parse_source(source)
    model_kwargs = dict(model_kwargs or {})
    if spec.kind == "none":
        raise TransferError("transfer source 'none' has no template or weights; the polarity and "
                            "weight conditions need a source (" + SOURCE_FORMAT + ")")
    if spec.kind == "imagenet":
        return _load_imagenet(spec, arch)
    if spec.kind == "directory":
        src = load_source_dir(spec, arch, model_kwargs)
        _guard(spec, src.info.get("source_dataset"), target_dataset, allow_same_dataset)
        return src
    _guard(spec, spec.dataset, target_dataset, allow_same_dataset)
    defaults = pretrain.recipe_defaults() if isinstance(pretrain, PretrainConfig) else dict(pretrain or {})
    recipe = spec.recipe(arch, model_kwargs, defaults)
    d = pretrained_dir(spec, recipe, cache_dir)
    if str(d) in _MEMO:
        return _MEMO[str(d)]
    src = _read_cached(spec, d)
    if src is None:
        with _locked(d):
            src = _read_cached(spec, d)  # another process may have finished meanwhile
            if src is None:
                src = _pretrain(spec, recipe, d, log)
    _MEMO[str(d)] = src
    return src


def check_source_dir(spec: SourceSpec, arch: str, model_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of a source directory, checked against the target's architecture: weights
    and signs only transfer between networks of one shape (the head excepted)."""
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
    src = _source_from_dir(spec, Path(spec.path))
    _MEMO[spec.path] = src
    return src


def _load_imagenet(spec: SourceSpec, arch: str) -> Source:
    if arch != "alexnet":
        raise TransferError(f"transfer source {spec.text!r} holds torchvision AlexNet weights and "
                            f"needs arch 'alexnet' (got {arch!r}); for the compact network use "
                            "'pretrained:<dataset>' or a shipped source")
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


def _pretrain(spec: SourceSpec, recipe, d: Path, log: Callable[[str], None] | None) -> Source:
    """Train ``recipe`` (the same trainer as ``polarity source train``) and write it as the
    source directory ``d``."""
    from .cli import command_for
    from .recipe import train_source

    if log:
        log(f"pretraining source {spec.text!r} with the source recipe ({recipe.epochs} epochs, "
            f"{recipe.train_n or 'all'} training images, seed {recipe.seed}); cache {d}")

    def on_epoch(row: dict, seconds: float) -> None:
        log(f"pretraining {spec.text!r}: epoch {row['epoch']}/{recipe.epochs}, train loss "
            f"{row['train_loss']:.4f}, train acc {row['train_acc']:.3f} ({seconds:.0f}s)")

    try:
        model, data, metrics = train_source(recipe, log=None, on_epoch=on_epoch if log else None)
    except SourceError as e:
        raise TransferError(f"source {spec.text!r}: {e}") from None
    name = f"pretrained-{d.name}"
    write_source_dir(d, model, name=name, recipe=recipe, dataset_label=data.label,
                     classes=data.classes, metrics=metrics,
                     command=command_for(recipe, name, d, metrics["threads"]))
    src = _read_cached(spec, d)
    if src is None:
        raise TransferError(f"source {spec.text!r}: the source directory {d} just written does not read back")
    src.info["cached"] = False
    if log:
        log(f"source {spec.text!r}: {data.label} test acc {metrics['test_accuracy']:.3f}, init "
            f"agreement {metrics['init_agreement']:.3f} after {metrics['train_seconds']:.0f}s")
    return src


__all__ = ["Source", "PretrainConfig", "load_source", "load_source_dir", "check_source_dir",
           "polarity_template", "transfer_weights", "clear_memo", "source_key", "source_hash",
           "pretrained_dir", "CACHE_VERSION"]
