"""Image files decoded once to uint8 arrays and cached: the reader behind the offline CIFAR-10
copy and folder datasets (``polarity.data.images``).

Members ``(split, class, file name, bytes or path)`` come from a tarball (:func:`read_tar_members`)
or a folder tree (:func:`read_dir_members`); :func:`decode_cached` puts them in the fixed
class-interleaved order, decodes them with PIL (in worker processes for large splits) and stores
the arrays as ``.npy`` files under ``polarity.files.cache_root()/datasets``, checked against
recorded shapes and CRC-32 checksums on every load (``docs/images.md``).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write, cache_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")
_CACHE_VERSION = 1
PARALLEL_MIN = 2000  # images per split below which decoding stays in one process


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for; the message lists the paths searched."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but is truncated or malformed; the message names the file."""


def listing_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(d)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# A member: (split, class_name, file_name, loader) where loader is bytes or a Path.
def read_tar_members(path: Path):
    """A function returning every image member as (split, class, file name, bytes)."""

    def entries():
        out = []
        try:
            with tarfile.open(path, "r:*") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    parts = Path(m.name).parts
                    if len(parts) < 3 or parts[-3] not in ("train", "test", "val"):
                        continue
                    if not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
                        continue
                    f = tf.extractfile(m)
                    out.append(("test" if parts[-3] == "val" else parts[-3], parts[-2], parts[-1], f.read()))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DatasetCorruptError(f"{path}: cannot read the tarball ({e}); it may be truncated or corrupt") from e
        return out

    return entries


def read_dir_members(d: Path, splits=("train", "test")):
    """A function returning every image file as (split, class, file name, path)."""
    def entries():
        out = []
        for split in splits:
            sd = d / split
            if split == "test" and not sd.is_dir() and (d / "val").is_dir():
                sd = d / "val"
            if not sd.is_dir():
                raise DatasetNotFoundError(f"{d}: no '{split}/' subdirectory (expected {d}/{{train,test}}/<class>/<image>)")
            for cdir in sorted(x for x in sd.iterdir() if x.is_dir()):
                for f in sorted(cdir.iterdir()):
                    if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS):
                        out.append((split, cdir.name, f.name, f))
        return out

    return entries


def _decode_one(item):
    from PIL import Image

    blob, size, mode = item
    try:
        im = Image.open(io.BytesIO(blob) if isinstance(blob, (bytes, bytearray)) else blob)
        im = im.convert(mode)
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise DatasetCorruptError(f"cannot decode image {blob if isinstance(blob, Path) else '<tar member>'}: {e}") from e
    return a[:, :, None] if a.ndim == 2 else a


def _decode_chunk(args):
    items, size, mode = args
    return np.stack([_decode_one((b, size, mode)) for b in items]) if items else None


def _interleaved_order(members, classes):
    """Sort key: (rank of the file within its class, class index). File names that are integers
    sort numerically, others lexicographically."""

    def name_key(fn):
        stem = Path(fn).stem
        return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)

    by_class: dict[str, list] = {}
    for m in members:
        by_class.setdefault(m[1], []).append(m)
    keyed = []
    for c, ms in by_class.items():
        ms.sort(key=lambda m: name_key(m[2]))
        ci = classes.index(c)
        keyed += [((rank, ci), m) for rank, m in enumerate(ms)]
    keyed.sort(key=lambda t: t[0])
    return [m for _, m in keyed]


def decode_cached(key: str, entries_fn, workers, size, classes, source, mode=None) -> dict:
    """Decode (split, class, file, blob) members to uint8 arrays once and cache them."""
    cdir = cache_root() / "datasets"
    meta_path = cdir / f"{key}.json"
    cached = _load_cache(cdir, key, meta_path)
    if cached is not None:
        return cached
    members = entries_fn()
    if classes is None:
        classes = tuple(sorted({m[1] for m in members if m[0] == "train"}))
    unknown = sorted({m[1] for m in members} - set(classes))
    if unknown:
        raise DatasetCorruptError(f"{source}: unexpected class folders {unknown}; expected {list(classes)}")
    if mode is None:
        mode = "RGB"
    out: dict = {"classes": classes}
    split_members = {}
    for split in ("train", "test"):
        ms = [m for m in members if m[0] == split]
        if not ms:
            raise DatasetNotFoundError(f"{source}: no images in its '{split}' split")
        split_members[split] = _interleaved_order(ms, list(classes))
    if size is None:
        size = _common_size([m[3] for m in split_members["train"]], source)
    nworkers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    for split, ms in split_members.items():
        blobs = [m[3] for m in ms]
        chunks = [blobs[i::nworkers] for i in range(nworkers)] if nworkers > 1 else [blobs]
        arr = None
        if nworkers > 1 and len(blobs) >= PARALLEL_MIN and can_fork_pool():
            import multiprocessing as mp

            try:
                with mp.get_context("fork").Pool(nworkers) as pool:
                    parts = pool.map(_decode_chunk, [(c, size, mode) for c in chunks])
            except DatasetCorruptError:
                raise
            except Exception as e:  # a pool that cannot start: decode in this process
                warnings.warn(f"parallel decoding failed ({type(e).__name__}: {e}); decoding in one process",
                              stacklevel=3)
            else:
                arr = np.empty((len(blobs),) + parts[0].shape[1:], dtype=np.uint8)
                for i, part in enumerate(parts):
                    arr[i::nworkers] = part
        if arr is None:
            arr = _decode_chunk((blobs, size, mode))
        out[f"{split}_x"] = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
        out[f"{split}_y"] = np.array([list(classes).index(m[1]) for m in ms], dtype=np.int64)
    _save_cache(cdir, key, meta_path, out, source)
    return _to_tensors(out)


def can_fork_pool() -> bool:
    """Worker processes only where that is safe: fork available and not inside a daemonic
    process (e.g. a multiprocessing pool worker of the engine, which may not have children)."""
    import multiprocessing as mp

    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


def _common_size(blobs, source):
    from PIL import Image

    sizes = Counter()
    for b in blobs:
        with Image.open(io.BytesIO(b) if isinstance(b, (bytes, bytearray)) else b) as im:
            sizes[(im.size[1], im.size[0])] += 1
    (size, count), = sizes.most_common(1)
    if len(sizes) > 1:
        warnings.warn(f"{source}: training images have {len(sizes)} different sizes; resizing all to the "
                      f"most common, {size[0]}x{size[1]} (pass image_size= to choose)", stacklevel=3)
    return size


def _to_tensors(d: dict) -> dict:
    out = {k: torch.from_numpy(v) for k, v in d.items() if k != "classes"}
    out["classes"] = tuple(d["classes"])
    return out


_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


def _save_cache(cdir: Path, key: str, meta_path: Path, d: dict, source: str) -> None:
    try:
        meta = {"version": _CACHE_VERSION, "source": source, "classes": list(d["classes"]), "arrays": {}}
        for k in _ARRAYS:
            # the temporary name ends in .npy, so np.save writes exactly there
            p = atomic_write(cdir / f"{key}.{k}.npy", lambda t, a=d[k]: np.save(t, a, allow_pickle=False))
            meta["arrays"][k] = {"shape": list(d[k].shape), "dtype": str(d[k].dtype), "crc32": _crc(d[k]),
                                 "bytes": p.stat().st_size}
        atomic_write(meta_path, json.dumps(meta, indent=1))  # last: the arrays are complete
    except OSError as e:
        warnings.warn(f"could not write the dataset cache under {cdir}: {e}", stacklevel=3)


def _load_cache(cdir: Path, key: str, meta_path: Path) -> dict | None:
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != _CACHE_VERSION:
            return None
        out = {}
        for k in _ARRAYS:
            m = meta["arrays"][k]
            p = cdir / f"{key}.{k}.npy"
            if p.stat().st_size != m["bytes"]:
                raise ValueError(f"{p}: size {p.stat().st_size} != {m['bytes']}")
            a = np.load(p, allow_pickle=False)
            if list(a.shape) != m["shape"] or str(a.dtype) != m["dtype"] or _crc(a) != m["crc32"]:
                raise ValueError(f"{p}: shape/dtype/checksum mismatch")
            out[k] = torch.from_numpy(a)
        out["classes"] = tuple(meta["classes"])
        return out
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"ignoring a damaged dataset cache ({e}); decoding again", stacklevel=4)
        return None


__all__ = ["IMAGE_EXTENSIONS", "PARALLEL_MIN", "DatasetNotFoundError", "DatasetCorruptError",
           "listing_hash", "read_tar_members", "read_dir_members", "decode_cached",
           "can_fork_pool"]
