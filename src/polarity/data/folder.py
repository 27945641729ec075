"""Folder datasets (the ImageFolder layout): ``<path>/train/<class>/<image>`` with the validation
images in ``<path>/test/<class>/`` or, without ``test/``, ``<path>/val/``.  Listed and checked
without decoding (:func:`folder_layout`: both splits hold the same classes, at least two, none
empty), counted (:class:`SplitSizes`), and decoded once into the dataset cache
(:func:`folder_arrays`).  :func:`polarity.data.images.load_dataset` ("folder:<path>") wraps the
arrays as an ``ImageData``; docs/images.md ("Your own images") has the user's side.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .decode import IMAGE_EXTENSIONS, DatasetCorruptError, DatasetNotFoundError, decode_cached, listing_hash

__all__ = ["VAL_SPLITS", "SplitSizes", "FolderLayout", "folder_layout", "folder_arrays"]

VAL_SPLITS = ("test", "val")  # a folder dataset's validation folder, in order of preference


@dataclass(frozen=True)
class SplitSizes:
    """How many images a dataset's training and validation splits hold, and its classes."""

    train: int
    val: int
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class FolderLayout:
    """A folder dataset's image files, listed and checked (:func:`folder_layout`): per split
    (``"train"`` and ``val_split``, the folder its validation images come from), per class, the
    files in sorted order."""

    path: Path
    val_split: str
    classes: tuple[str, ...]
    files: dict[str, dict[str, list[Path]]] = field(repr=False)

    @property
    def sizes(self) -> SplitSizes:
        count = {s: sum(len(v) for v in byc.values()) for s, byc in self.files.items()}
        return SplitSizes(count["train"], count[self.val_split], self.classes)


def _class_files(d: Path) -> dict[str, list[Path]]:
    """Class folder name -> its image files (hidden names skipped), both sorted; ``os.scandir``
    so that a large folder is listed without a ``stat`` per file."""
    out = {}
    with os.scandir(d) as classes:
        dirs = sorted(c.name for c in classes if c.is_dir() and not c.name.startswith("."))
    for c in dirs:
        with os.scandir(d / c) as it:
            out[c] = [d / c / n for n in sorted(f.name for f in it if f.is_file()
                      and not f.name.startswith(".") and f.name.lower().endswith(IMAGE_EXTENSIONS))]
    return out


_LAYOUTS: dict[tuple, "FolderLayout"] = {}  # listings by their folders' mtimes (folder_layout)


def _listing_key(path: Path, val: str) -> tuple:
    """The folders whose entries a listing reads, with their mtimes: a file added, removed or
    renamed anywhere in them changes the key."""
    dirs = [path / "train", path / val]
    for split in list(dirs):
        with os.scandir(split) as it:
            dirs += [Path(e.path) for e in it if e.is_dir()]
    return (str(path), str(path.resolve()), val, tuple((str(d), d.stat().st_mtime_ns) for d in dirs))


def folder_layout(path: str | os.PathLike) -> FolderLayout:
    """List a folder dataset without decoding it: ``train/<class>/<image>`` and the validation
    images in ``test/<class>/`` (or ``val/`` when there is no ``test/``).  Raises
    DatasetNotFoundError naming what was looked for, or DatasetCorruptError when the two splits
    hold different classes, fewer than two, or a class folder holds no images."""
    path = Path(path).expanduser()
    want = f"{path}/train/<class>/<image> and {path}/test/<class>/<image> (or val/ for test/)"
    if not path.is_dir():
        raise DatasetNotFoundError(f"folder dataset {path} does not exist (expected {want})")
    if not (path / "train").is_dir():
        raise DatasetNotFoundError(f"folder dataset {path} has no train/ folder (expected {want})")
    val = next((s for s in VAL_SPLITS if (path / s).is_dir()), None)
    if val is None:
        raise DatasetNotFoundError(f"folder dataset {path} has neither test/ nor val/ beside train/ "
                                   f"(expected {want})")
    key = _listing_key(path, val)
    if key in _LAYOUTS:
        return _LAYOUTS[key]
    files = {"train": _class_files(path / "train"), val: _class_files(path / val)}
    train, held = set(files["train"]), set(files[val])
    if train != held:
        only = [f"only in {s}/: {', '.join(sorted(a - b))}" for s, a, b in
                (("train", train, held), (val, held, train)) if a - b]
        raise DatasetCorruptError(f"folder dataset {path}: train/ and {val}/ hold different class "
                                  f"folders ({'; '.join(only)}); give both the same classes")
    if len(train) < 2:
        raise DatasetCorruptError(f"folder dataset {path}: train/ holds {len(train)} class folder(s) "
                                  f"{sorted(train)}; a classification task needs at least two "
                                  f"(train/<class>/<image>, one folder per class)")
    empty = [f"{s}/{c}/" for s, byc in files.items() for c, fs in byc.items() if not fs]
    if empty:
        raise DatasetCorruptError(f"folder dataset {path}: no images in {', '.join(empty[:5])}"
                                  f"{' ...' if len(empty) > 5 else ''} (image files end in "
                                  f"{', '.join(IMAGE_EXTENSIONS)})")
    _LAYOUTS[key] = FolderLayout(path, val, tuple(sorted(train)), files)
    return _LAYOUTS[key]


def folder_arrays(path: Path, image_size=None, workers=None) -> dict[str, Any]:
    """The folder dataset at ``path`` decoded (once, then from the cache) at ``image_size`` (default:
    the most common training-image size): ``train_x``/``train_y``/``test_x``/``test_y`` (the
    validation split is "test" whichever folder it is), ``classes``, and the train split's
    per-channel ``mean``/``std``."""
    layout = folder_layout(path)

    def entries():
        return [("train" if s == "train" else "test", c, f.name, f)
                for s, byc in layout.files.items() for c, fs in byc.items() for f in fs]

    size = None
    if image_size is not None:
        size = (int(image_size), int(image_size)) if isinstance(image_size, (int, np.integer)) else tuple(int(s) for s in image_size)
    key = "folder-" + hashlib.sha256(f"{path.resolve()}|{size}|{listing_hash(path)}".encode()).hexdigest()[:16]
    data = decode_cached(key, entries, workers, size=size, classes=layout.classes, source=str(path))
    xf = data["train_x"].to(torch.float64)
    data["mean"] = tuple(float(v) for v in xf.mean(dim=(0, 2, 3)))
    data["std"] = tuple(max(float(v), 1e-6) for v in xf.std(dim=(0, 2, 3)))
    data["classes"] = tuple(data["classes"])
    return data
