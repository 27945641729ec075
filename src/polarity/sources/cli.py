"""``polarity source train | list | info``: source networks from the command line."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .directory import SourceError, read_manifest, verify_source_dir, write_source_dir
from .recipe import SourceRecipe, train_source
from .zoo import ZOO, resolve, shipped

EXIT_USAGE = 2


def default_name(recipe: SourceRecipe) -> str:
    return f"{recipe.dataset.replace(':', '-')}-{recipe.arch}-w{recipe.width:g}"


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    recipe = SourceRecipe(dataset=args.dataset, arch=args.arch, width=args.width,
                          in_size=args.in_size, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, weight_decay=args.weight_decay, pad=args.pad,
                          flip=not args.no_flip, seed=args.seed, data_root=args.data_root)
    try:
        recipe.validate()
    except ValueError as e:
        return _error(str(e))
    name = args.name or default_name(recipe)
    out = Path(args.out) if args.out else Path("sources") / name
    if out.exists() and any(out.iterdir()) and not args.force:
        return _error(f"{out} exists and is not empty; pass --force to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        model, data, metrics = train_source(recipe, log=log, eval_every=args.eval_every)
    except (ValueError, FileNotFoundError, OSError) as e:
        return _error(str(e))
    command = command_for(recipe, name, out, torch.get_num_threads())
    write_source_dir(out, model, name=name, recipe=recipe, dataset_label=data.label,
                     classes=data.classes, metrics=metrics, command=command)
    print(f"{name}: test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_images']} "
          f"{data.label} test images after {metrics['train_seconds']:.0f}s -> {out}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    names = shipped()
    if not names:
        print(f"no shipped sources under {ZOO}")
    for n in names:
        m = read_manifest(ZOO / n)
        print(f"{n:<34} {m['dataset_label']:<34} {m['arch']} {m['model']}  test acc "
              f"{m.get('test_accuracy', float('nan')):.4f}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    try:
        path = resolve(args.source)
        m = verify_source_dir(path) if args.verify else read_manifest(path)
    except SourceError as e:
        return _error(str(e))
    print(f"source:     {m.get('name')}  ({path})")
    print(f"dataset:    {m['dataset_label']} ({m['dataset']}), {len(m['classes'])} classes")
    print(f"network:    {m['arch']} {m['model']}")
    print(f"accuracy:   {m.get('test_accuracy', float('nan')):.4f} on {m.get('test_images')} test images")
    print(f"trained:    {m.get('train_seconds')} s, {m.get('threads')} threads, {m.get('machine')}, "
          f"polarity {m.get('polarity_version')}, torch {m.get('torch')}, {m.get('created')}")
    print(f"command:    {m.get('command')}")
    for f, d in m["files"].items():
        print(f"file:       {f}  {d['bytes']} bytes  sha256 {d['sha256'][:16]}...")
    if args.verify:
        print("verified:   both files match the manifest")
    return 0


def _error(msg: str) -> int:
    print(f"polarity: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def add_parser(subparsers) -> argparse.ArgumentParser:
    s = subparsers.add_parser("source", help="train, list and inspect transfer source networks",
                              description=__doc__)
    ssub = s.add_subparsers(dest="source_cmd", metavar="{train,list,info}")
    s.set_defaults(func=lambda args: (s.print_help(), EXIT_USAGE)[1])
    d = SourceRecipe(dataset="")
    t = ssub.add_parser("train", help="train a source network and write its directory",
                        description="Train a source network with the documented recipe "
                                    "(docs/sources.md) and write weights, template and manifest.")
    t.add_argument("dataset", help="fmnist | cifar10 | <dataset>:<subset> (e.g. cifar10:animals)")
    t.add_argument("--arch", default=d.arch, choices=("compact", "alexnet"))
    t.add_argument("--width", type=float, default=d.width, help=f"compact channel multiplier (default {d.width})")
    t.add_argument("--in-size", type=int, default=d.in_size)
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--pad", type=int, default=d.pad, help="random-crop padding, pixels (0: no crops)")
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    t.add_argument("--eval-every", type=int, default=5, help="test-split evaluation every N epochs")
    t.add_argument("--data-root", default=None)
    t.add_argument("--name", help="source name (default <dataset>-<arch>-w<width>)")
    t.add_argument("--out", help="directory to write (default sources/<name>)")
    t.add_argument("--force", action="store_true", help="replace a non-empty --out")
    t.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    t.set_defaults(func=_cmd_train)
    ls = ssub.add_parser("list", help="the shipped sources")
    ls.set_defaults(func=_cmd_list)
    i = ssub.add_parser("info", help="a source's manifest (shipped name or directory)")
    i.add_argument("source")
    i.add_argument("--verify", action="store_true", help="check both files' sha256 against the manifest")
    i.set_defaults(func=_cmd_info)
    return s


def command_for(recipe: SourceRecipe, name: str, out: Path, threads: int) -> str:
    """The explicit command that trains ``recipe`` again (every recipe field spelled out)."""
    parts = ["polarity", "source", "train", recipe.dataset, "--arch", recipe.arch,
             "--width", f"{recipe.width:g}", "--in-size", str(recipe.in_size),
             "--epochs", str(recipe.epochs), "--batch-size", str(recipe.batch_size),
             "--lr", f"{recipe.lr:g}", "--weight-decay", f"{recipe.weight_decay:g}",
             "--pad", str(recipe.pad), "--seed", str(recipe.seed), "--threads", str(threads)]
    if not recipe.flip:
        parts.append("--no-flip")
    parts += ["--name", name, "--out", str(out)]
    return " ".join(shlex.quote(p) for p in parts)


__all__ = ["add_parser"]
