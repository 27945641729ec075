"""``polarity source train | list | info``: source networks from the command line."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from .directory import (MANIFEST, TEMPLATE, SourceError, read_manifest, read_source_dir,
                        write_source_dir)
from .recipe import OPTIMIZERS, SourceRecipe, command_for, init_agreement, train_source
from .zoo import ZOO, resolve, role, shipped

EXIT_USAGE = 2


def default_name(recipe: SourceRecipe) -> str:
    """``<dataset>-<arch>-w<width>``, or ``<dataset>-<factory>`` for ``package.module:factory``;
    a ``folder:DIR`` dataset is named by its folder's name."""
    from ..models import is_factory

    ds = recipe.dataset
    ds = Path(ds[len("folder:"):]).expanduser().resolve().name if ds.startswith("folder:") else ds.replace(":", "-")
    if is_factory(recipe.arch):
        return f"{ds}-{recipe.arch.rpartition(':')[2]}"
    return f"{ds}-{recipe.arch}-w{recipe.width:g}"


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    recipe = SourceRecipe(dataset=args.dataset, arch=args.arch, width=args.width,
                          in_size=args.in_size, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                          optimizer=args.optimizer, train_n=args.train_n, pad=args.pad,
                          early_weight_decay=args.early_weight_decay, early_epochs=args.early_epochs,
                          flip=not args.no_flip, seed=args.seed, data_root=args.data_root,
                          data_source=args.data_source)
    try:
        recipe.validate()
    except ValueError as e:
        return _error(str(e))
    name = args.name or default_name(recipe)
    out = Path(args.out) if args.out else Path("sources") / name
    problem = _unusable_out(out, args.force)
    if problem:
        return _error(problem)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        model, data, metrics = train_source(recipe, log=log, eval_every=args.eval_every)
    except (ValueError, FileNotFoundError, OSError) as e:
        return _error(str(e))
    command = command_for(recipe, name, out, torch.get_num_threads())
    written = _write_or_keep(out, model, name=name, recipe=recipe, dataset_label=data.label,
                             classes=data.classes, metrics=metrics, command=command)
    if written is None:
        return EXIT_USAGE
    print(f"{name}: test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_images']} "
          f"{data.label} test images, init agreement {metrics['init_agreement']:.3f}, after "
          f"{metrics['train_seconds']:.0f}s -> {written}")
    return 0 if written == out else EXIT_USAGE


def _unusable_out(out: Path, force: bool) -> str | None:
    """Why ``out`` cannot take a source directory (checked before any training), or None."""
    try:
        if out.is_symlink() and not out.exists():
            return f"--out {out} is a dangling symbolic link"
        if out.exists() and not out.is_dir():
            return f"--out {out} exists and is not a directory; give a directory path"
        if out.is_dir() and any(out.iterdir()) and not force:
            return f"{out} exists and is not empty; pass --force to replace it"
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a name over 255 bytes, a parent that is a file, no permission ...
        return f"cannot create --out {out}: {e.strerror or e}"
    if not os.access(out, os.W_OK | os.X_OK):
        return f"cannot write into --out {out} (permission denied)"
    return None


def _write_or_keep(out: Path, model, **kw) -> Path | None:
    """Write the trained source to ``out``; when that fails (a full disk, a vanished mount ...),
    nothing computed is lost: the model, still in memory, is written to a fresh directory under
    the temporary directory instead, and both places are named.  Returns where it was written
    (None when nowhere could take it)."""
    import tempfile

    try:
        return write_source_dir(out, model, **kw)
    except (OSError, SourceError) as e:
        first = f"could not write the trained source to {out}: {getattr(e, 'strerror', None) or e}"
    for name in ("weights.safetensors", "template.polarity", "manifest.json"):
        # a part written before the failure is not a source directory: never leave it looking like one
        with contextlib.suppress(OSError):
            if (out / name).is_file() and not (out / "manifest.json").is_file():
                (out / name).unlink()
    try:
        spare = Path(tempfile.mkdtemp(prefix=f"polarity-source-{kw['name'][:60]}-"))
        write_source_dir(spare, model, **kw)
    except (OSError, SourceError) as e2:
        _error(f"{first}; writing it under {tempfile.gettempdir()} failed too "
               f"({getattr(e2, 'strerror', None) or e2}). The training is lost: free space and rerun: "
               f"{kw['command']}")
        return None
    _error(f"{first}. Nothing is lost: the source was written to {spare} instead (its manifest's "
           f"command names {out}); move it there once there is room: mv {spare} {out}")
    return spare


def _cmd_list(args: argparse.Namespace) -> int:
    names = shipped()
    if not names:
        print(f"no shipped sources under {ZOO}")
    for n in names:
        try:
            m = read_manifest(ZOO / n)
        except SourceError as e:
            print(f"{n:<34} unreadable: {e}")
            continue
        agree = m.get("init_agreement")
        print(f"{n:<34} {m['dataset_label']:<24} {m['arch']} {m['model']}  test acc "
              f"{m['test_accuracy']:.4f}  init agreement {'-' if agree is None else f'{agree:.3f}'}  "
              f"[{role(n) or 'unlisted'}]")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from ..template import Template, TemplateError, diagnose

    try:
        path = resolve(args.source)
        if args.verify:
            net = read_source_dir(path, verify=True)
            m, template = net.manifest, net.template
            recomputed = _recheck_init_agreement(path, net)
        else:
            m = read_manifest(path)
            template = Template.load(path / TEMPLATE)
    except (SourceError, TemplateError) as e:
        return _error(str(e))
    r = m.get("recipe") if isinstance(m.get("recipe"), dict) else {}
    print(f"source:     {m.get('name')}  ({path})")
    print(f"dataset:    manifest says: {m['dataset_label']} ({m['dataset']}), {len(m['classes'])} classes")
    print(f"network:    {m['arch']} {m['model']}")
    print(f"accuracy:   {m['test_accuracy']:.4f} on {m.get('test_images')} test images")
    if r:
        early = (f" ({r.get('early_weight_decay')} for the first {r.get('early_epochs')} epochs)"
                 if r.get("early_epochs") else "")
        print(f"recipe:     {r.get('optimizer', 'sgd')}, lr {r.get('lr')}, weight decay {r.get('weight_decay')}"
              f"{early}, {r.get('epochs')} epochs, {r.get('train_n') or 'all'} training images, seed {r.get('seed')}")
    print(f"trained:    {m.get('train_seconds')} s, {m.get('threads')} threads, {m.get('machine')}, "
          f"polarity {m.get('polarity_version')}, torch {m.get('torch')}, {m.get('created')}")
    print(f"command:    {m.get('command')}")
    for f, d in m["files"].items():
        if isinstance(d, dict):
            print(f"file:       {f}  {d.get('bytes')} bytes  sha256 {str(d.get('sha256'))[:16]}...")
    agree = m.get("init_agreement")
    if agree is None:
        print("learned:    the manifest records no init agreement")
    else:
        per = ", ".join(f"{k} {v:.3f}" for k, v in (m.get("init_agreement_per_layer") or {}).items()
                        if v is not None)
        print(f"learned:    sign agreement with the recipe's own init {agree:.3f} overall "
              f"(0.5: independent; non-head weights){'; ' + per if per else ''}")
    print("signs:")
    print("  " + str(diagnose(template)).replace("\n", "\n  "))
    if args.verify:
        print(f"verified:   both files match the manifest; the weights are finite and fit the network; "
              f"the template is their signs{'; init agreement recomputed: ' + f'{recomputed:.4f}' if recomputed is not None else ''}")
    return 0


def _recheck_init_agreement(path: Path, net) -> float | None:
    """Recompute the init agreement from the recipe's seed; a manifest that claims another value
    is refused.  None when the manifest has no recipe or no claim."""
    import dataclasses

    m = net.manifest
    if m.get("init_agreement") is None or not isinstance(m.get("recipe"), dict):
        return None
    known = {f.name for f in dataclasses.fields(SourceRecipe)}
    try:
        recipe = SourceRecipe(**{k: v for k, v in m["recipe"].items() if k in known})
        got = init_agreement(recipe, net.state_dict, len(m["classes"]))["overall"]
    except (TypeError, ValueError) as e:
        raise SourceError(f"{path / MANIFEST}: field 'recipe' does not make the network ({e})") from None
    if abs(got - m["init_agreement"]) > 5e-4:
        raise SourceError(f"{path / MANIFEST}: field 'init_agreement' says {m['init_agreement']}, but the "
                          f"weights agree with the recipe's own init at {got:.4f}")
    return got


def _error(msg: str) -> int:
    from ..cli_errors import error  # the one convention of every sub-command

    return error(msg)


def add_parser(subparsers) -> argparse.ArgumentParser:
    s = subparsers.add_parser("source", help="train, list and inspect transfer source networks",
                              description=__doc__)
    ssub = s.add_subparsers(dest="source_cmd", metavar="{train,list,info}", required=True)
    d = SourceRecipe(dataset="")
    t = ssub.add_parser("train", help="train a source network and write its directory",
                        description="Train a source network with the documented recipe "
                                    "(docs/sources.md) and write weights, template and manifest.")
    t.add_argument("dataset", help="fmnist | cifar10 | <dataset>:<subset> (e.g. cifar10:animals)")
    t.add_argument("--arch", "--model", default=d.arch, metavar="ARCH",
                   help="compact | alexnet | package.module:factory, your own network (a callable "
                        f"num_classes -> nn.Module; docs/models.md); default {d.arch}")
    t.add_argument("--width", type=float, default=d.width, help=f"compact channel multiplier (default {d.width})")
    t.add_argument("--in-size", type=int, default=d.in_size)
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    t.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS,
                   help=f"sgd (Nesterov momentum, L2 weight decay) or adamw (decoupled weight decay); default {d.optimizer}")
    t.add_argument("--momentum", type=float, default=d.momentum, help=f"SGD momentum / AdamW beta1 (default {d.momentum})")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--early-weight-decay", type=float, default=d.early_weight_decay,
                   help="weight decay of the first --early-epochs epochs (erases the initialisation's signs)")
    t.add_argument("--early-epochs", type=int, default=d.early_epochs)
    t.add_argument("--train-n", type=int, default=d.train_n, help="first n training images (default 0: all)")
    t.add_argument("--pad", type=int, default=d.pad, help="random-crop padding, pixels (0: no crops)")
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    t.add_argument("--eval-every", type=int, default=5, help="test-split evaluation every N epochs")
    t.add_argument("--data-root", default=None)
    t.add_argument("--data-source", default=d.data_source, choices=("auto", "torchvision", "offline"))
    t.add_argument("--name", help="source name (default <dataset>-<arch>-w<width>, or "
                                  "<dataset>-<factory> for a factory)")
    t.add_argument("--out", help="directory to write (default sources/<name>)")
    t.add_argument("--force", action="store_true", help="replace a non-empty --out")
    t.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    t.set_defaults(func=_cmd_train)
    ls = ssub.add_parser("list", help="the shipped sources")
    ls.set_defaults(func=_cmd_list)
    i = ssub.add_parser("info", help="a source's manifest (shipped name or directory)")
    i.add_argument("source")
    i.add_argument("--verify", action="store_true",
                   help="check both files' sha256 against the manifest, that the weights are finite and "
                        "fit the network, that the template is their signs, and recompute the init agreement")
    i.set_defaults(func=_cmd_info)
    return s


__all__ = ["add_parser"]
