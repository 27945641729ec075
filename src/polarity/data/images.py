"""Image datasets held in memory as uint8 tensors, transformed on the fly in batches.

Datasets (``load_dataset(name, root=None, source="auto")``):

* ``"fmnist"``: Fashion-MNIST, 60k/10k grey 28x28, label "Fashion-MNIST".
* ``"cifar10"``: CIFAR-10, 50k/10k RGB 32x32, label "CIFAR-10" (torchvision's pickled batches) or
  "CIFAR-10 (JPEG copy)" (the offline JPEG copy; JPEG compression makes its pixels differ from the
  official ones, so every output made from it says so).
* ``"folder:<path>"``: any ImageFolder-style directory: ``<path>/train/<class>/<image>`` and the
  validation images in ``<path>/test/<class>/<image>`` or, without ``test/``, in ``<path>/val/``
  (:func:`folder_layout` checks the layout and that both splits hold the same classes, and
  :func:`split_sizes` counts the images without decoding them); decoded once with PIL to uint8 at one fixed size
  (all images are resized to the most common training-image size unless ``image_size`` is given)
  and cached like the CIFAR JPEG copy; always 3 channels (grey images are converted to RGB). Mean
  and standard deviation are computed on its train split; the label is the folder's name.

Sources:

* ``"torchvision"``: ``torchvision.datasets.FashionMNIST`` / ``CIFAR10`` under ``root`` with
  ``download=True`` (needs internet the first time; ``root`` defaults to ``$POLARITY_DATA`` or
  ``~/.cache/polarity/torchvision``).
* ``"offline"``: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist/*-ubyte.gz``, or the same files in ``$POLARITY_FMNIST_DIR``
  or ``root``), parsed here (IDX format, magic numbers and sizes checked); CIFAR-10 from the JPEG
  copy ``cifar10-jpeg.tar.gz`` (``$POLARITY_CIFAR10_JPEG``, ``root``, then
  ``../shared/data/cifar10-jpeg.tar.gz`` next to the repository or the working directory).
* ``"auto"``: torchvision's files when they are already under ``root`` (or its default above; no
  download), else offline.

The offline CIFAR copy and folder datasets are put in a fixed class-interleaved order (the first n
training images are class balanced) and decoded once into ``.npy`` arrays under
``polarity.files.cache_root()/datasets``, checksummed on every load (:mod:`polarity.data.decode`;
``docs/images.md`` says why).

Transforms: ``ImageData.transform(size, rgb)`` is the dataset's SPEC §5 normalisation as a
:class:`BatchTransform`, which turns a uint8 batch on any device into a normalised float batch
(resize, grey->3 channels) with a few tensor ops, no per-image Python.

The device pipeline: images travel as uint8 and are transformed where the model
runs.  :func:`to_device` moves a tensor to an accelerator through page-locked memory without
blocking the host; :func:`fits_on_device` says whether a trial's uint8 data may stay on the
device for the whole trial.  On the CPU both are no-ops, so CPU numbers do not depend on them.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..files import cache_root, sha256_file
from .decode import (DatasetCorruptError, DatasetNotFoundError, decode_cached, listing_hash,
                     read_dir_members, read_tar_members)
from .folder import VAL_SPLITS, FolderLayout, SplitSizes, folder_arrays, folder_layout

__all__ = [
    "ImageData", "load_dataset", "first_n", "BatchTransform", "to_device", "fits_on_device",
    "DEVICE_DATA_FRACTION", "DatasetNotFoundError",
    "DatasetCorruptError", "read_idx", "DATASETS", "FMNIST_CLASSES", "CIFAR10_CLASSES",
    "FolderLayout", "SplitSizes", "folder_layout", "split_sizes", "VAL_SPLITS",
]

FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# SPEC §5, on the 0..255 scale.
FMNIST_MEAN, FMNIST_STD = (72.94,), (90.02,)
CIFAR10_MEAN, CIFAR10_STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)

DATASETS = ("fmnist", "cifar10", "folder:<path>")
SOURCES = ("auto", "torchvision", "offline")
DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
CIFAR_JPEG_NAME = "cifar10-jpeg.tar.gz"
# the named datasets' split sizes (train, test; both class balanced), known without loading them
KNOWN_SIZES = {"fmnist": (60000, 10000, FMNIST_CLASSES), "cifar10": (50000, 10000, CIFAR10_CLASSES)}
# a trial's uint8 data stays on an accelerator when it takes at most this share of its free memory
DEVICE_DATA_FRACTION = 0.5


@dataclass(frozen=True, eq=False)
class ImageData:
    """A whole dataset in memory: uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``."""

    name: str
    label: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def transform(self, size: int | Sequence[int] | None = None, rgb: bool = False,
                  dtype: torch.dtype = torch.float32,
                  memory_format: torch.memory_format = torch.contiguous_format) -> "BatchTransform":
        """The SPEC §5 normalisation of this dataset, optionally resized / grey->RGB."""
        return BatchTransform(self.mean, self.std, size=size, rgb=rgb, dtype=dtype,
                              memory_format=memory_format)

    def __repr__(self) -> str:  # the tensors are large: summarise
        return (f"ImageData(name={self.name!r}, label={self.label!r}, train={tuple(self.train_x.shape)}, "
                f"test={tuple(self.test_x.shape)}, classes={len(self.classes)})")


# ----------------------------------------------------------------------------------------------
# Public helpers


def first_n(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples (deterministic: a view, no shuffling)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer, got {n!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} images, {len(y)} labels")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > len(x):
        raise ValueError(f"asked for the first {n} examples but only {len(x)} are available")
    return x[:n], y[:n]


class BatchTransform:
    """uint8 ``[B, C, H, W]`` (or ``[B, H, W]``) on any device -> normalised float batch.

    ``(x - mean) / std`` per channel (constants on the 0..255 scale), then a bilinear resize to
    ``size`` (``F.interpolate(..., mode="bilinear", align_corners=False, antialias=False)``), then
    grey -> 3 channels by repetition when ``rgb`` is true. Resizing before repeating is exact
    (bilinear interpolation is linear per channel) and three times cheaper. The arithmetic is
    float32; the output is of ``dtype`` (float32 by default), dense in ``memory_format``
    (``torch.channels_last`` for a channels-last model), on the input's device: give it the batch
    where the model runs (:func:`to_device`), and only uint8 crosses the bus.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float],
                 size: int | Sequence[int] | None = None, rgb: bool = False,
                 dtype: torch.dtype = torch.float32,
                 memory_format: torch.memory_format = torch.contiguous_format):
        mean = tuple(float(m) for m in (mean if isinstance(mean, (tuple, list)) else (mean,)))
        std = tuple(float(s) for s in (std if isinstance(std, (tuple, list)) else (std,)))
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        if any(not np.isfinite(s) or s <= 0 for s in std):
            raise ValueError(f"std values must be positive and finite, got {std}")
        if size is not None:
            size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"size must be a positive int or (height, width), got {size}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {dtype}")
        if memory_format not in (torch.contiguous_format, torch.channels_last):
            raise ValueError(f"memory_format must be torch.contiguous_format or torch.channels_last, "
                             f"got {memory_format}")
        self.mean, self.std, self.size, self.rgb, self.dtype = mean, std, size, bool(rgb), dtype
        self.memory_format = memory_format
        self._consts: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return (f"BatchTransform(mean={self.mean}, std={self.std}, size={self.size}, rgb={self.rgb}, "
                f"dtype={self.dtype}, memory_format={self.memory_format})")

    def _constants(self, device: torch.device, channels: int):
        key = (device, channels)
        if key not in self._consts:
            if len(self.mean) not in (1, channels):
                raise ValueError(f"the batch has {channels} channels but mean/std have {len(self.mean)} values")
            scale = torch.tensor([1.0 / s for s in self.std], dtype=torch.float32, device=device)
            shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32, device=device)
            self._consts[key] = scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)
        return self._consts[key]

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        b, c, h, w = input_shape if len(input_shape) == 4 else (input_shape[0], 1, *input_shape[1:])
        if self.size is not None:
            h, w = self.size
        return (b, 3 if (self.rgb and c == 1) else c, h, w)

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        if not isinstance(xb, torch.Tensor):
            raise TypeError(f"BatchTransform expects a torch.Tensor, got {type(xb).__name__}")
        if xb.dim() == 3:
            xb = xb.unsqueeze(1)
        if xb.dim() != 4:
            raise ValueError(f"expected a batch [B, C, H, W] or [B, H, W], got shape {tuple(xb.shape)}")
        if xb.dtype != torch.uint8:
            raise ValueError(f"expected uint8 images on the 0..255 scale, got {xb.dtype}")
        c = xb.shape[1]
        if self.rgb and c not in (1, 3):
            raise ValueError(f"rgb=True needs 1 or 3 channels, got {c}")
        scale, shift = self._constants(xb.device, c)
        x = xb.to(torch.float32).mul_(scale).sub_(shift)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        if self.rgb and c == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.to(self.dtype)
        return x.contiguous(memory_format=self.memory_format)


def to_device(x: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``x`` on ``device`` (``x`` itself when already there).  A host tensor bound for a CUDA
    device is copied into page-locked memory first (unless it is pinned already) and sent with a
    non-blocking copy: the host goes on queueing work while the copy runs.  PyTorch's caching
    host allocator keeps the pinned block alive until the copy has finished."""
    device = torch.device(device)
    if x.device == device or (device.index is None and x.device.type == device.type):
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
    return x.to(device)


def fits_on_device(nbytes: int, device: str | torch.device) -> bool:
    """Whether ``nbytes`` of data may stay on ``device`` for a whole trial: on a CUDA device
    when they take at most ``DEVICE_DATA_FRACTION`` of its free memory (the rest is the model's,
    its activations' and the transformed batches'); always elsewhere (on the CPU the loader
    holds them already; other devices report no free memory)."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return int(nbytes) <= DEVICE_DATA_FRACTION * free


def load_dataset(name: str, root: str | os.PathLike | None = None, source: str = "auto",
                 image_size: int | Sequence[int] | None = None, workers: int | None = None) -> ImageData:
    """Load a whole dataset into memory (see the module docstring for names and sources).

    ``image_size`` applies to ``folder:`` datasets only (default: the most common size);
    ``workers`` is the number of decoding processes for JPEG/folder data (default: up to 2).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {name!r}")
    if name.startswith("folder:"):
        path = name[len("folder:"):]
        if not path:
            raise ValueError("folder: needs a path, e.g. 'folder:/data/mydataset'")
        return _load_folder(Path(path).expanduser(), image_size=image_size, workers=workers)
    if image_size is not None:
        raise ValueError("image_size applies to folder: datasets only")
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("fmnist", "fashionmnist"):
        return _load_fmnist(root, source)
    if key in ("cifar10", "cifar"):
        return _load_cifar10(root, source, workers)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


# ----------------------------------------------------------------------------------------------
# IDX (Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike, expect_ndim: int | None = None) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed). Raises DatasetCorruptError naming the file
    when it is truncated, not gzip data, or its header (magic number, sizes) is inconsistent."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DatasetNotFoundError(f"cannot read {path}: {e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DatasetCorruptError(f"{path}: corrupt or truncated gzip data ({e})") from e
    if len(raw) < 4:
        raise DatasetCorruptError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim < 1:
        raise DatasetCorruptError(f"{path}: bad IDX magic number 0x{raw[:4].hex()} "
                                  f"(expected 0x000008{expect_ndim or 1:02x} style header)")
    if expect_ndim is not None and ndim != expect_ndim:
        raise DatasetCorruptError(f"{path}: IDX file has {ndim} dimensions, expected {expect_ndim} "
                                  f"(magic 0x{raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetCorruptError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    need = int(np.prod(dims)) * dtype.itemsize
    have = len(raw) - header
    if have != need:
        raise DatasetCorruptError(f"{path}: IDX header says shape {dims} ({need} data bytes) but the "
                                  f"file holds {have} data bytes ({'truncated' if have < need else 'trailing data'})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _fmnist_dirs(root) -> list[Path]:
    dirs = []
    env = os.environ.get("POLARITY_FMNIST_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    if root is not None:
        r = Path(root).expanduser()
        dirs += [r, r / "fashion-mnist", r / "FashionMNIST" / "raw"]
    dirs.append(DEBIAN_FMNIST_DIR)
    return dirs


def _find_idx(d: Path, stem: str) -> Path | None:
    for suffix in (".gz", ""):
        p = d / (stem + suffix)
        if p.is_file():
            return p
    return None


def _load_fmnist_offline(root) -> ImageData:
    searched = _fmnist_dirs(root)
    for d in searched:
        files = {k: _find_idx(d, stem) for k, stem in FMNIST_FILES.items()}
        if all(files.values()):
            break
    else:
        raise DatasetNotFoundError(
            "Fashion-MNIST not found. Looked for " + ", ".join(f"{s}{{.gz,}}" for s in FMNIST_FILES.values())
            + " in: " + ", ".join(str(d) for d in searched)
            + ". Install Debian's copy (apt-get install dataset-fashion-mnist), set $POLARITY_FMNIST_DIR, "
              "pass root=<dir with the files>, or use source='torchvision' with a root to download into.")
    arrays = {k: read_idx(p, expect_ndim=3 if k.endswith("x") else 1) for k, p in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if len(x) != len(y):
            raise DatasetCorruptError(f"Fashion-MNIST {split}: {len(x)} images but {len(y)} labels "
                                      f"({files[split + '_x']}, {files[split + '_y']})")
        if y.size and int(y.max()) >= 10:
            raise DatasetCorruptError(f"{files[split + '_y']}: label {int(y.max())} out of range 0..9")
    t = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    return ImageData(
        name="fmnist", label="Fashion-MNIST",
        train_x=t["train_x"].unsqueeze(1).contiguous(), train_y=t["train_y"].long(),
        test_x=t["test_x"].unsqueeze(1).contiguous(), test_y=t["test_y"].long(),
        classes=FMNIST_CLASSES, mean=FMNIST_MEAN, std=FMNIST_STD)


def _torchvision_root(root) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("POLARITY_DATA")
    return Path(env).expanduser() if env else cache_root() / "torchvision"


def _load_torchvision(name: str, root, download: bool) -> ImageData:
    import torchvision

    r = _torchvision_root(root)
    cls = torchvision.datasets.FashionMNIST if name == "fmnist" else torchvision.datasets.CIFAR10
    try:
        tr = cls(str(r), train=True, download=download)
        te = cls(str(r), train=False, download=download)
    except Exception as e:  # torchvision raises RuntimeError / URLError / OSError
        raise DatasetNotFoundError(
            f"torchvision could not {'download' if download else 'find'} {cls.__name__} under {r}: {e}. "
            f"Offline, use source='offline'" + (" (apt-get install dataset-fashion-mnist)" if name == "fmnist"
                                                 else f" with the JPEG copy {CIFAR_JPEG_NAME}")) from e

    def images(ds):
        d = ds.data
        d = torch.as_tensor(np.asarray(d)) if not isinstance(d, torch.Tensor) else d
        d = d.unsqueeze(1) if d.dim() == 3 else d.permute(0, 3, 1, 2)
        return d.to(torch.uint8).contiguous()

    def labels(ds):
        return torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)

    if name == "fmnist":
        return ImageData("fmnist", "Fashion-MNIST", images(tr), labels(tr), images(te), labels(te),
                         FMNIST_CLASSES, FMNIST_MEAN, FMNIST_STD)
    return ImageData("cifar10", "CIFAR-10", images(tr), labels(tr), images(te), labels(te),
                     CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD)


def _torchvision_present(name: str, root) -> bool:
    """torchvision's files already under root (or its default: $POLARITY_DATA, else
    ~/.cache/polarity/torchvision, where source="torchvision" downloads)."""
    r = _torchvision_root(root)
    if name == "fmnist":
        raw = r / "FashionMNIST" / "raw"
        return all((raw / s).is_file() for s in FMNIST_FILES.values())
    base = r / "cifar-10-batches-py"
    return all((base / f).is_file() for f in ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])


def _load_fmnist(root, source) -> ImageData:
    if source == "torchvision" or (source == "auto" and _torchvision_present("fmnist", root)):
        return _load_torchvision("fmnist", root, download=(source == "torchvision"))
    return _load_fmnist_offline(root)


def _load_cifar10(root, source, workers) -> ImageData:
    if source == "torchvision" or (source == "auto" and _torchvision_present("cifar10", root)):
        return _load_torchvision("cifar10", root, download=(source == "torchvision"))
    return _load_cifar10_jpeg(root, workers)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 JPEG copy


def _repo_candidates() -> list[Path]:
    """Repository roots to look beside: from this file's location and from the CWD."""
    out: list[Path] = []
    here = Path(__file__).resolve()
    for p in here.parents:
        if (p / "pyproject.toml").is_file() or (p / ".git").exists():
            out.append(p)
            break
    cwd = Path.cwd().resolve()
    for p in (cwd, *cwd.parents):
        if (p / "pyproject.toml").is_file() or (p / ".git").exists():
            out.append(p)
            break
    out.append(cwd)
    return list(dict.fromkeys(out))   # in order, each once


def _cifar_jpeg_candidates(root) -> list[Path]:
    c: list[Path] = []
    env = os.environ.get("POLARITY_CIFAR10_JPEG")
    if env:
        c.append(Path(env).expanduser())
    if root is not None:
        r = Path(root).expanduser()
        c += [r / CIFAR_JPEG_NAME, r / "cifar10-jpeg", r]
    for repo in _repo_candidates():
        c += [repo.parent / "shared" / "data" / CIFAR_JPEG_NAME, repo / "shared" / "data" / CIFAR_JPEG_NAME]
    return list(dict.fromkeys(c))   # in order, each once


def _is_split_dir(p: Path) -> bool:
    return p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()


def _load_cifar10_jpeg(root, workers) -> ImageData:
    searched = _cifar_jpeg_candidates(root)
    for p in searched:
        if p.is_file() or _is_split_dir(p):
            break
    else:
        raise DatasetNotFoundError(
            f"CIFAR-10 not found. Looked for the JPEG copy ({CIFAR_JPEG_NAME} or an extracted "
            f"cifar10-jpeg/{{train,test}}/<class>/ directory) at: " + ", ".join(str(s) for s in searched)
            + ". Set $POLARITY_CIFAR10_JPEG to the tarball, pass root=<dir holding it>, or use "
              "source='torchvision' with a root to download the official dataset.")
    if p.is_file():
        entries = read_tar_members(p)
        key = "cifar10-jpeg-" + sha256_file(p)[:16]
    else:
        entries = read_dir_members(p)
        key = "cifar10-jpegdir-" + listing_hash(p)[:16]
    data = decode_cached(key, entries, workers, size=(32, 32), classes=CIFAR10_CLASSES, source=str(p))
    data.pop("classes")
    return ImageData(name="cifar10", label="CIFAR-10 (JPEG copy)", classes=CIFAR10_CLASSES,
                     mean=CIFAR10_MEAN, std=CIFAR10_STD, **data)


# ----------------------------------------------------------------------------------------------
# Folder datasets (polarity.data.folder lists, checks and decodes them)


def split_sizes(name: str) -> SplitSizes | None:
    """The split sizes of ``fmnist``, ``cifar10`` or ``folder:<path>`` (listed, not decoded);
    None for a name the loaders do not know.  Class subsets: ``polarity.data.subsets``."""
    if name.startswith("folder:"):
        return folder_layout(name[len("folder:"):]).sizes
    if name in KNOWN_SIZES:
        train, val, classes = KNOWN_SIZES[name]
        return SplitSizes(train, val, classes)
    return None


def _load_folder(path: Path, image_size=None, workers=None) -> ImageData:
    data = folder_arrays(path, image_size=image_size, workers=workers)
    return ImageData(name=f"folder:{path}", label=path.name or str(path), **data)
