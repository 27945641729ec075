"""Image dataset loaders on the real offline files, the JPEG/folder decoder and cache on small
synthetic copies, and the batched transform."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polarity.data import decode, images
from polarity.data.images import (BatchTransform, DatasetCorruptError, DatasetNotFoundError, first_n,
                                  load_dataset, read_idx)

HAVE_FMNIST = all((images.DEBIAN_FMNIST_DIR / f"{s}.gz").is_file() for s in images.FMNIST_FILES.values())
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="Debian's dataset-fashion-mnist is not installed")


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fmnist", source="offline")


@needs_fmnist
def test_fmnist_offline_shapes_labels_balance(fmnist):
    d = fmnist
    assert d.label == "Fashion-MNIST" and d.name == "fmnist"
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.train_y.min() == 0 and d.train_y.max() == 9 and d.test_y.max() == 9
    assert d.train_y.bincount().tolist() == [6000] * 10
    assert d.test_y.bincount().tolist() == [1000] * 10
    assert len(d.classes) == 10 and d.mean == (72.94,) and d.std == (90.02,)
    # the official order: the first training labels of Fashion-MNIST are 9, 0, 0, 3
    assert d.train_y[:4].tolist() == [9, 0, 0, 3]
    # the pixel statistics are those SPEC §5 normalises by
    assert abs(d.train_x.float().mean().item() - 72.94) < 0.1


@needs_fmnist
def test_fmnist_first_n_deterministic(fmnist):
    again = load_dataset("fmnist", source="offline")
    x1, y1 = first_n(fmnist.train_x, fmnist.train_y, 500)
    x2, y2 = first_n(again.train_x, again.train_y, 500)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and len(x1) == 500
    # "auto" without a torchvision root is the offline copy
    auto = load_dataset("fmnist")
    assert torch.equal(auto.train_x[:100], fmnist.train_x[:100])


def test_first_n_errors():
    x, y = torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.arange(5)
    assert first_n(x, y, 0)[0].shape[0] == 0
    with pytest.raises(ValueError, match="only 5 are available"):
        first_n(x, y, 6)
    with pytest.raises(ValueError, match=">= 0"):
        first_n(x, y, -1)
    with pytest.raises(TypeError):
        first_n(x, y, 2.5)


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def test_read_idx_roundtrip_and_corruption(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "a-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(_idx_bytes(a)))
    assert np.array_equal(read_idx(good, expect_ndim=3), a)
    # data truncated inside a valid gzip stream
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(_idx_bytes(a)[:-5]))
    with pytest.raises(DatasetCorruptError, match="short.gz.*truncated"):
        read_idx(short)
    # the gzip stream itself truncated
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good.read_bytes()[:20])
    with pytest.raises(DatasetCorruptError, match="cut.gz"):
        read_idx(cut)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x03" + _idx_bytes(a)[4:])
    with pytest.raises(DatasetCorruptError, match="magic"):
        read_idx(bad)
    with pytest.raises(DatasetCorruptError, match="3 dimensions, expected 1"):
        read_idx(good, expect_ndim=1)


@needs_fmnist
def test_fmnist_truncated_real_file_is_named(tmp_path, monkeypatch):
    for stem in images.FMNIST_FILES.values():
        (tmp_path / f"{stem}.gz").symlink_to(images.DEBIAN_FMNIST_DIR / f"{stem}.gz")
    stem = images.FMNIST_FILES["test_x"]
    (tmp_path / f"{stem}.gz").unlink()
    raw = (images.DEBIAN_FMNIST_DIR / f"{stem}.gz").read_bytes()
    (tmp_path / f"{stem}.gz").write_bytes(raw[: len(raw) // 2])
    monkeypatch.setenv("POLARITY_FMNIST_DIR", str(tmp_path))
    with pytest.raises(DatasetCorruptError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("fmnist", source="offline")


def test_missing_datasets_name_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "DEBIAN_FMNIST_DIR", tmp_path / "no-debian")
    monkeypatch.delenv("POLARITY_FMNIST_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="no-debian.*apt-get install dataset-fashion-mnist"):
        load_dataset("fmnist", root=tmp_path / "myroot")
    monkeypatch.setenv("POLARITY_CIFAR10_JPEG", str(tmp_path / "nowhere.tar.gz"))
    monkeypatch.setattr(images, "_repo_candidates", lambda: [tmp_path / "repo"])
    with pytest.raises(DatasetNotFoundError, match="nowhere.tar.gz.*shared/data/cifar10-jpeg.tar.gz"):
        load_dataset("cifar10", source="offline")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist3d")
    with pytest.raises(ValueError, match="unknown source"):
        load_dataset("fmnist", source="web")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nofolder'}")


def _jpeg(color, size=(32, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
          (128, 128, 128), (255, 255, 255), (0, 0, 0), (255, 128, 0)]


def _fake_cifar_tar(path: Path, per_class=(3, 2)) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for split, count in zip(("train", "test"), per_class):
            for ci, cls in enumerate(images.CIFAR10_CLASSES):
                for i in range(count):
                    blob = _jpeg(COLORS[ci])
                    info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{cls}/{i:04d}.jpg")
                    info.size = len(blob)
                    tf.addfile(info, io.BytesIO(blob))


def test_cifar_jpeg_order_and_cache(tmp_path, monkeypatch):
    tar = tmp_path / "cifar10-jpeg.tar.gz"
    _fake_cifar_tar(tar)
    monkeypatch.setenv("POLARITY_CIFAR10_JPEG", str(tar))
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "cache"))
    d = load_dataset("cifar10", source="offline", workers=1)
    assert d.label == "CIFAR-10 (JPEG copy)"
    assert d.train_x.shape == (30, 3, 32, 32) and d.test_x.shape == (20, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8
    # interleaved: (file index, class) -> the first 10 images are one per class
    assert d.train_y.tolist() == list(range(10)) * 3
    assert d.test_y.tolist() == list(range(10)) * 2
    # pixels decoded correctly (JPEG is lossy: within a few levels)
    centre = d.train_x[:10, :, 16, 16].int()
    assert (centre - torch.tensor(COLORS)).abs().max() <= 8
    cached = list((tmp_path / "cache" / "datasets").glob("*.npy"))
    assert len(cached) == 4
    again = load_dataset("cifar10", source="offline")
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.test_y, d.test_y)
    # a damaged cache is detected and rebuilt
    xfile = next(p for p in cached if p.name.endswith("train_x.npy"))
    raw = bytearray(xfile.read_bytes())
    raw[-1] ^= 0xFF
    xfile.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="damaged dataset cache"):
        rebuilt = load_dataset("cifar10", source="offline", workers=1)
    assert torch.equal(rebuilt.train_x, d.train_x)


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    tar = tmp_path / "cifar10-jpeg.tar.gz"
    _fake_cifar_tar(tar, per_class=(2, 1))
    monkeypatch.setenv("POLARITY_CIFAR10_JPEG", str(tar))
    monkeypatch.setattr(decode, "PARALLEL_MIN", 0)
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "c1"))
    par = load_dataset("cifar10", source="offline", workers=2)
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "c2"))
    ser = load_dataset("cifar10", source="offline", workers=1)
    assert torch.equal(par.train_x, ser.train_x) and torch.equal(par.test_y, ser.test_y)


def test_cifar_truncated_tarball(tmp_path, monkeypatch):
    tar = tmp_path / "cifar10-jpeg.tar.gz"
    _fake_cifar_tar(tar)
    raw = tar.read_bytes()
    tar.write_bytes(raw[: len(raw) // 2])
    monkeypatch.setenv("POLARITY_CIFAR10_JPEG", str(tar))
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetCorruptError, match="cifar10-jpeg.tar.gz"):
        load_dataset("cifar10", source="offline", workers=1)


def test_folder_dataset(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "shapes"
    for split, count in (("train", 4), ("test", 2)):
        for ci, cls in enumerate(["circle", "square"]):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                size = (20, 16) if (split, i) != ("train", 3) else (40, 30)  # one odd size
                Image.new("RGB", size, COLORS[ci]).save(root / split / cls / f"img{i}.png")
    with pytest.warns(UserWarning, match="different sizes"):
        d = load_dataset(f"folder:{root}")
    assert d.classes == ("circle", "square")
    assert d.train_x.shape == (8, 3, 16, 20) and d.test_x.shape == (4, 3, 16, 20)
    assert d.train_y.tolist() == [0, 1] * 4
    assert d.mean[0] == pytest.approx(255 / 2, abs=1) and d.std[0] > 100
    fixed = load_dataset(f"folder:{root}", image_size=8)
    assert fixed.train_x.shape == (8, 3, 8, 8)


def test_batch_transform_normalises_resizes_and_expands():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=g)
    t = BatchTransform((72.94,), (90.02,))
    y = t(x)
    assert y.dtype == torch.float32 and y.shape == (4, 1, 28, 28)
    assert torch.allclose(y, (x.float() - 72.94) / 90.02, atol=1e-5)
    t2 = BatchTransform((72.94,), (90.02,), size=64, rgb=True)
    y2 = t2(x)
    assert y2.shape == (4, 3, 64, 64) == t2.output_shape(x.shape) and y2.is_contiguous()
    assert torch.equal(y2[:, 0], y2[:, 2])
    ref = F.interpolate((x.float() - 72.94) / 90.02, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(y2[:, :1], ref, atol=1e-5)
    # per-channel constants
    c = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=g)
    mean, std = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
    yc = BatchTransform(mean, std, rgb=True)(c)
    exp = (c.float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(yc, exp, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        t(x.float())
    with pytest.raises(ValueError, match="3 channels but mean/std have 2"):
        BatchTransform((1.0, 2.0), (1.0, 1.0))(c)
    with pytest.raises(ValueError, match="positive"):
        BatchTransform((0.0,), (0.0,))


@needs_fmnist
def test_fmnist_normalised_statistics(fmnist):
    y = fmnist.transform()(fmnist.train_x[:20000])
    assert abs(y.mean().item()) < 0.02 and abs(y.std().item() - 1) < 0.02


@pytest.mark.slow
def test_cifar10_jpeg_full_splits():
    """The real JPEG copy (decoded once, then cached under $POLARITY_CACHE or ~/.cache/polarity)."""
    try:
        d = load_dataset("cifar10", source="offline")
    except DatasetNotFoundError as e:
        pytest.skip(str(e))
    assert d.label == "CIFAR-10 (JPEG copy)"
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.train_y.bincount().tolist() == [5000] * 10
    assert d.test_y.bincount().tolist() == [1000] * 10
    x100, y100 = first_n(d.train_x, d.train_y, 100)
    assert y100.bincount().tolist() == [10] * 10
    again = load_dataset("cifar10", source="offline")
    assert torch.equal(again.train_x[:1000], d.train_x[:1000])
    m = d.train_x[:10000].float().mean(dim=(0, 2, 3))
    assert torch.allclose(m, torch.tensor(d.mean), atol=1.5)


def test_auto_prefers_torchvision_files_under_root(tmp_path, monkeypatch):
    """``source="auto"`` uses torchvision's files when they are under root (no download)."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.integers(0, 256, (12, 28, 28)), "train_y": np.arange(12) % 10,
              "test_x": rng.integers(0, 256, (5, 28, 28)), "test_y": np.arange(5)}
    for k, stem in images.FMNIST_FILES.items():
        (raw / stem).write_bytes(_idx_bytes(arrays[k]))
    d = load_dataset("fmnist", root=tmp_path)  # auto
    assert d.label == "Fashion-MNIST"
    assert d.train_x.shape == (12, 1, 28, 28) and d.train_x.dtype == torch.uint8
    assert np.array_equal(d.train_x[:, 0].numpy(), arrays["train_x"])
    assert d.test_y.tolist() == list(range(5)) and d.test_y.dtype == torch.int64


def test_decoding_inside_a_daemon_process_is_serial(monkeypatch):
    import multiprocessing as mp

    assert decode.can_fork_pool() == ("fork" in mp.get_all_start_methods())
    monkeypatch.setattr(mp.current_process(), "daemon", True, raising=False)
    assert not decode.can_fork_pool()
