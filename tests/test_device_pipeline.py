"""The device-side image pipeline (issue 15): uint8 batches go to the device, then are normalised
and resized there.  On the CPU it must give the host pipeline's batches exactly and leave the
numbers of existing runs unchanged bit for bit (references made before the pipeline existed,
tests/data/images_reference.json); on a GPU, when one is present, it must agree with the host
to float tolerance."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import platform
from pathlib import Path

import pytest
import torch

import polarity.experiments.images.protocol as protocol
from polarity.data.images import (BatchTransform, CIFAR10_MEAN, CIFAR10_STD, FMNIST_MEAN,
                                  FMNIST_STD, DatasetNotFoundError, ImageData, first_n,
                                  fits_on_device, load_dataset, to_device)
from polarity.experiments import ExperimentError, get
from polarity.models import build_model, init_glorot_
from polarity.training import evaluate, fit, make_optimizer
from polarity.transfer import clear_memo

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "images_reference.json").read_text())
MADE = REFERENCE["made_with"]

# Bit-identical numbers are defined on the platform the references were made on: another torch
# build or CPU kernel set (AVX2 vs AVX512) may round convolutions differently.
same_platform = pytest.mark.skipif(
    (torch.__version__, torch.backends.cpu.get_cpu_capability(), platform.machine())
    != (MADE["torch"], MADE["cpu_capability"], MADE["machine"]),
    reason=f"references made with torch {MADE['torch']} on {MADE['machine']} "
           f"{MADE['cpu_capability']}; bit-identical numbers are only defined there")


def _fmnist():
    try:
        return load_dataset("fmnist")
    except DatasetNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not available: {e}")


def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    grey = torch.randint(0, 256, (24, 1, 28, 28), dtype=torch.uint8, generator=g)
    rgb = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g)
    return [(grey, FMNIST_MEAN, FMNIST_STD), (rgb, CIFAR10_MEAN, CIFAR10_STD)]


def _reference_transform(xb, mean, std, size, rgb):
    """The SPEC §5 transform written independently, in float64."""
    x = xb.double()
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    x = torch.nn.functional.interpolate((x - m) / s, size=(size, size), mode="bilinear",
                                        align_corners=False, antialias=False)
    return x.expand(-1, 3, -1, -1) if rgb and x.shape[1] == 1 else x


# ----------------------------------------------------------------------------- the transform

@pytest.mark.parametrize("size", [32, 227])
def test_device_path_gives_the_host_paths_batches_on_the_cpu(size):
    """Host path (transform where the images are stored, then move the floats) and device path
    (move the uint8, then transform) on the CPU: tolerance 0, the same bits.  Both are within
    3e-5 of the transform computed independently in float64: outputs lie within +-4.2 and the
    float32 bilinear source coordinates are off by ~1e-7 relative (measured: 1.1e-5 at 227 px)."""
    idx = torch.tensor([5, 0, 17, 3, 3, 22])
    for x, mean, std in _batches():
        t = BatchTransform(mean, std, size=size, rgb=True)
        host = t(x[idx]).to("cpu", non_blocking=True)
        device = t(to_device(x[idx], "cpu"))
        assert torch.equal(host, device)
        assert host.shape == (6, 3, size, size) and host.is_contiguous()
        ref = _reference_transform(x[idx], mean, std, size, rgb=True)
        assert float((host.double() - ref).abs().max()) < 3e-5
        # channels-last output: the same values in NHWC layout
        tl = BatchTransform(mean, std, size=size, rgb=True, memory_format=torch.channels_last)(x[idx])
        assert tl.is_contiguous(memory_format=torch.channels_last) and torch.equal(tl, host)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_path_agrees_with_the_host_path():  # pragma: no cover - runs where a GPU is
    """On a GPU the bilinear kernel may round differently (fused multiply-adds in the source
    coordinates): agreement to 5e-5, outputs within +-4.2."""
    for x, mean, std in _batches():
        t = BatchTransform(mean, std, size=227, rgb=True)
        gpu = t(to_device(x, "cuda")).cpu()
        assert float((gpu - t(x)).abs().max()) < 5e-5


def test_to_device_and_fits_on_device_on_the_cpu():
    x = torch.arange(6, dtype=torch.uint8)
    assert to_device(x, "cpu") is x and to_device(x, torch.device("cpu")) is x
    assert fits_on_device(10**15, "cpu")  # the host holds whatever the loader loaded


def test_batch_transform_memory_format_is_validated():
    with pytest.raises(ValueError, match="memory_format"):
        BatchTransform((0.0,), (1.0,), memory_format=torch.preserve_format)
    assert "channels_last" in repr(BatchTransform((0.0,), (1.0,), memory_format=torch.channels_last))


# ----------------------------------------------------------------------------- the protocol's data

def _synthetic(n=30, nval=12, channels=1, side=28):
    g = torch.Generator().manual_seed(1)
    img = lambda k: torch.randint(0, 256, (k, channels, side, side), dtype=torch.uint8, generator=g)  # noqa: E731
    lab = lambda k: torch.randint(0, 10, (k,), generator=g)  # noqa: E731
    return ImageData("fmnist", "synthetic", img(n), lab(n), img(nval), lab(nval),
                     tuple(str(i) for i in range(10)), FMNIST_MEAN, FMNIST_STD)


@pytest.mark.parametrize("pretransform", [True, False])
def test_trial_data_on_the_cpu_is_todays(pretransform, monkeypatch):
    """Pre-transformed sets and per-batch sets hold what the host pipeline held: the same
    tensors (uint8 views, or the floats transformed once)."""
    if not pretransform:
        monkeypatch.setattr(protocol, "PRETRANSFORM_BYTES", 0)
    data = _synthetic()
    hp = dataclasses.replace(get("fmnist").presets["tiny"], val_size=12, in_size=16)
    sets = protocol.trial_data(hp, data, 20, "cpu")
    tf = data.transform(size=16, rgb=True)
    x, y = first_n(data.train_x, data.train_y, 20)
    if pretransform:
        assert sets.train_tf is None and sets.val_tf is None
        assert torch.equal(sets.train_x, tf(x)) and torch.equal(sets.val_x, tf(data.test_x))
    else:
        assert sets.train_x is x or torch.equal(sets.train_x, x)
        assert sets.train_x.dtype == torch.uint8 and sets.train_tf is not None
        assert torch.equal(sets.train_tf(sets.train_x[:3]), tf(x[:3]))
    assert torch.equal(sets.train_y, y) and torch.equal(sets.val_y, data.test_y)


# ----------------------------------------------------------------------------- the same numbers as before

@same_platform
def test_fit_with_per_batch_transforms_gives_the_numbers_of_before():
    """fit + evaluate on uint8 images transformed per batch (the path of source pretraining and
    of large training sets): history, validation and final weights exactly as recorded."""
    ref = REFERENCE["fit"]
    data = _fmnist()
    x, y = first_n(data.train_x, data.train_y, 64)
    vx, vy = first_n(data.test_x, data.test_y, 100)
    tf = data.transform(size=32, rgb=True)
    model = build_model("compact", 10, in_size=32, width=0.25)
    init_glorot_(model, 7)
    opt = make_optimizer(model, 1e-3)
    g = torch.Generator().manual_seed(7)
    perms = [torch.randperm(64, generator=g) for _ in range(2)]
    torch.manual_seed(7)
    hist = fit(model, opt, x, y, tf, perms, 16, device="cpu")
    val = evaluate(model, vx, vy, tf, device="cpu", batch_size=40)
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    assert [list(t) for t in hist] == ref["history"]
    assert list(val) == ref["val"]
    assert h.hexdigest() == ref["state_sha256"]


def _cifar10_jpeg_present() -> bool:
    from polarity.data.images import _cifar_jpeg_candidates, _is_split_dir

    return any(p.is_file() or _is_split_dir(p) for p in _cifar_jpeg_candidates(None))


@pytest.mark.slow
@same_platform
@pytest.mark.skipif(not _cifar10_jpeg_present(), reason="the tiny preset's source is pretrained on "
                    "CIFAR-10: its JPEG copy is not at ../shared/data/cifar10-jpeg.tar.gz")
def test_a_tiny_run_gives_the_numbers_of_before(tmp_path, monkeypatch):
    """`polarity run fmnist --preset tiny --set trials=2` (source pretrained afresh, as in the
    reference) gives every per-epoch number of images_tiny_fmnist.csv exactly, and the same
    per-trial measures."""
    _fmnist()
    real = protocol.load_source
    monkeypatch.setattr(protocol, "load_source",
                        lambda *a, **k: real(*a, **{**k, "cache_dir": tmp_path / "cache"}))
    clear_memo()
    exp = get("fmnist")
    hp = dataclasses.replace(exp.presets["tiny"], trials=2)
    exp.validate(hp)
    got = {}
    try:
        for job in exp.jobs(hp):
            for r in exp.run_job(hp, job):
                got[(r.key.condition, r.key.trial)] = r
    finally:
        clear_memo()
    with open(DATA / REFERENCE["tiny"]["epochs_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(r.epochs) for r in got.values()) == 24
    for row in rows:
        r = got[(row["condition"], int(row["trial"]))]
        e = r.epochs[int(row["epoch"]) - 1]
        assert e.epoch == int(row["epoch"])
        mine = {"train_loss": e.train_loss, "train_acc": e.train_acc, "val_loss": e.val_loss,
                "val_acc": e.val_acc, **e.extra}
        for k, v in row.items():
            if k in ("experiment", "condition", "n", "width", "trial", "epoch") or v == "":
                continue
            assert mine[k] == float(v), (row["condition"], row["trial"], row["epoch"], k)
    for t in REFERENCE["tiny"]["trials"]:
        r = got[(t["condition"], t["trial"])]
        assert r.seed == t["seed"]
        for k, v in t.items():
            if k not in ("condition", "n", "trial", "seed"):
                assert r.extra[k] == v, (t["condition"], t["trial"], k)


# ----------------------------------------------------------------------------- throughput options

def test_throughput_options_are_hparams_with_the_papers_defaults():
    for name in ("fmnist", "cifar10", "images"):
        for preset, hp in get(name).presets.items():
            assert (hp.precision, hp.channels_last) == ("fp32", False), (name, preset)
    exp = get("cifar10")
    q = exp.presets["quick"]
    for ok in ("fp32", "tf32", "bf16"):
        exp.validate(dataclasses.replace(q, precision=ok, channels_last=True))
    with pytest.raises(ExperimentError, match="unknown precision 'fp16'"):
        exp.validate(dataclasses.replace(q, precision="fp16"))
    with pytest.raises(ExperimentError, match="channels_last"):
        exp.validate(dataclasses.replace(q, channels_last="yes"))


def test_a_bf16_channels_last_trial_runs_and_keeps_frozen_signs(monkeypatch):
    """The throughput options through the protocol, on the CPU: finite numbers, frozen arms
    without violations, the model back in contiguous float32 afterwards."""
    data = _synthetic(n=24, nval=10)
    hp = dataclasses.replace(get("fmnist").presets["tiny"], source="none", in_size=16,
                             conditions=("fluid-rand", "frozen-rand"), sample_sizes=(24,),
                             epochs=2, batch_size=8, val_size=10, precision="bf16",
                             channels_last=True)
    get("fmnist").validate(hp)
    results = protocol.run_trial(hp, 24, 0, hp.conditions, data=data)
    assert [r.key.condition for r in results] == ["fluid-rand", "frozen-rand"]
    for r in results:
        assert len(r.epochs) == 2
        assert all(0.0 < e.train_loss < 10 and 0.0 <= e.val_acc <= 1.0 for e in r.epochs)
    assert results[1].extra["final_violations"] == 0
