"""Class subsets of a dataset: ``cifar10:vehicles``, ``cifar10:animals``, ``fmnist:classes=0,1,2``.

The positive control of the transfer study trains a source on one half of a dataset's classes
and transfers it to the other half, where the useful features are known to be shared.  A subset
keeps its parent's normalisation constants and image order (the first n of a subset are its
first n images in the parent's order) and renumbers the kept classes 0..k-1 in the order given.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from .images import CIFAR10_CLASSES, FMNIST_CLASSES, ImageData, SplitSizes, split_sizes

NAMED = {
    "cifar10": {"vehicles": ("airplane", "automobile", "ship", "truck"),
                "animals": ("bird", "cat", "deer", "dog", "frog", "horse")},
    "fmnist": {"tops": ("T-shirt/top", "Pullover", "Coat", "Shirt"),
               "others": ("Trouser", "Dress", "Sandal", "Sneaker", "Bag", "Ankle boot")},
}
_CLASSES = {"cifar10": CIFAR10_CLASSES, "fmnist": FMNIST_CLASSES}


class SubsetError(ValueError):
    """A class-subset name that does not name classes of its dataset."""


def split_name(text: str) -> tuple[str, str | None]:
    """``"cifar10:vehicles"`` -> ``("cifar10", "vehicles")``; ``"cifar10"`` -> ``("cifar10", None)``.
    A ``folder:`` dataset has no subset part."""
    if text.startswith("folder:"):
        return text, None
    base, sep, sub = text.partition(":")
    return base, (sub if sep else None)


def subset_classes(base: str, subset: str, classes: Sequence[str] | None = None) -> tuple[str, ...]:
    """The class names a subset keeps, validated against the dataset's classes."""
    classes = tuple(classes if classes is not None else _CLASSES.get(base, ()))
    named = NAMED.get(base, {})
    if subset in named:
        return named[subset]
    if subset.startswith("classes="):
        picked = []
        for item in subset[len("classes="):].split(","):
            item = item.strip()
            if item.isdigit() and int(item) < len(classes):
                picked.append(classes[int(item)])
            elif item in classes:
                picked.append(item)
            else:
                raise SubsetError(f"dataset subset {base}:{subset}: {item!r} is not a class of {base} "
                                  f"(classes: {', '.join(classes) or 'unknown'})")
        if len(set(picked)) != len(picked) or len(picked) < 2:
            raise SubsetError(f"dataset subset {base}:{subset} needs at least two distinct classes")
        return tuple(picked)
    raise SubsetError(f"unknown subset {subset!r} of {base}; known: "
                      f"{', '.join(named) or 'none'}, or classes=NAME|INDEX,...")


def class_subset(data: ImageData, classes: Sequence[str], name: str | None = None) -> ImageData:
    """``data`` restricted to ``classes`` (labels renumbered in that order)."""
    missing = [c for c in classes if c not in data.classes]
    if missing:
        raise SubsetError(f"{data.label} has no classes {missing}")
    old = torch.tensor([data.classes.index(c) for c in classes])
    remap = torch.full((len(data.classes),), -1, dtype=torch.int64)
    remap[old] = torch.arange(len(classes))

    def keep(x, y):
        new = remap[y]
        sel = new >= 0
        return x[sel], new[sel]

    tx, ty = keep(data.train_x, data.train_y)
    vx, vy = keep(data.test_x, data.test_y)
    tag = name or ",".join(classes)
    return replace(data, name=f"{data.name}:{tag}", label=f"{data.label} [{tag}]", train_x=tx,
                   train_y=ty, test_x=vx, test_y=vy, classes=tuple(classes))




def sizes(text: str) -> SplitSizes | None:
    """``split_sizes`` that also understands ``<dataset>:<subset>`` names (the named datasets are
    class balanced, so a subset of k classes holds k / classes of each split)."""
    base, sub = split_name(text)
    whole = split_sizes(base)
    if sub is None or whole is None:
        return whole
    kept = subset_classes(base, sub, whole.classes)
    k, c = len(kept), whole.num_classes
    return SplitSizes(whole.train // c * k, whole.val // c * k, kept)


def load(text: str, root=None, source: str = "auto") -> ImageData:
    """``load_dataset`` that also understands ``<dataset>:<subset>`` names."""
    from .images import load_dataset

    base, sub = split_name(text)
    data = load_dataset(base, root=root, source=source)
    if sub is None:
        return data
    return class_subset(data, subset_classes(base, sub, data.classes), name=sub)


__all__ = ["NAMED", "SubsetError", "class_subset", "load", "sizes", "split_name", "subset_classes"]
