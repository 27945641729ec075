"""AlexNet layouts, the compact network, Keras-style initialisation and checkpoint loading."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from polarity.models import build_model
from polarity.models.alexnet import (alexnet, compact_alexnet, head_names, imagenet_state_dict,
                                     init_glorot_)
from polarity.transfer import transfer_weights

TV_PARAMS = 61_100_840  # torchvision AlexNet, 1000 classes


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def tv_state_dict():
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(weights=None)
    assert _count(tv) == TV_PARAMS
    return tv.state_dict()


def test_alexnet_layouts_and_forward():
    torch.set_num_threads(1)
    app, rep = alexnet(head="append"), alexnet(head="replace")
    assert _count(app) == TV_PARAMS + 1000 * 10 + 10
    assert _count(rep) == TV_PARAMS - (4096 * 1000 + 1000) + (4096 * 10 + 10)
    assert head_names(app) == ("classifier.8.weight", "classifier.8.bias")
    assert head_names(rep) == ("classifier.6.weight", "classifier.6.bias")
    assert isinstance(app.classifier[7], nn.ReLU) and app.classifier[6].out_features == 1000
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        assert app.eval()(x).shape == (2, 10) and rep.eval()(x).shape == (2, 10)
    with pytest.raises(ValueError, match="unknown head"):
        alexnet(head="bolt-on")


def test_checkpoint_loads_into_both_heads(tv_state_dict, tmp_path):
    torch.set_num_threads(1)
    plain = tmp_path / "alexnet.pth"
    torch.save(tv_state_dict, plain)
    sd = imagenet_state_dict(plain)
    assert set(sd) == set(tv_state_dict)
    for head in ("append", "replace"):
        m = alexnet(head=head)
        before = {n: p.clone() for n, p in m.named_parameters() if n in head_names(m)}
        copied = transfer_weights(sd, m)
        params = dict(m.named_parameters())
        assert set(copied) == set(params) - set(head_names(m))
        for n in copied:
            assert torch.equal(params[n], tv_state_dict[n])
        for n, v in before.items():  # the head keeps its own initialisation
            assert torch.equal(params[n], v)
        # the ImageNet 1000-way layer is kept (hidden) under "append", dropped under "replace"
        assert ("classifier.6.weight" in copied) == (head == "append")


def test_wrapped_checkpoint_and_prefixes(tmp_path):
    src = init_glorot_(compact_alexnet(), seed=5)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, wrapped)
    sd = imagenet_state_dict(str(wrapped))
    dst = init_glorot_(compact_alexnet(), seed=6)
    head = {n: p.clone() for n, p in dst.named_parameters() if n in head_names(dst)}
    transfer_weights(sd, dst)
    for n, p in dst.named_parameters():
        assert torch.equal(p, head[n] if n in head else src.state_dict()[n])


def test_checkpoint_errors(tmp_path, tv_state_dict):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        imagenet_state_dict(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        imagenet_state_dict(junk)
    with pytest.raises(ValueError, match="unknown weights"):
        imagenet_state_dict("IMAGENET9K_V9")
    small = compact_alexnet()
    with pytest.raises(ValueError, match="shape mismatch: features.0.weight"):
        transfer_weights(tv_state_dict, small)
    partial = {k: v for k, v in tv_state_dict.items() if not k.startswith("features.3")}
    with pytest.raises(ValueError, match="features.3.weight"):
        transfer_weights(partial, alexnet())


def test_imagenet_weights_offline_error(monkeypatch, tmp_path):
    """Without internet (and no cached copy) the torchvision path says so and suggests a file."""
    import urllib.error

    def offline(*a, **k):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="needs internet.*local checkpoint"):
        imagenet_state_dict("IMAGENET1K_V1")


def test_compact_forward_shapes_and_registry():
    torch.set_num_threads(1)
    m = build_model("compact", 10)
    assert _count(m) == 545_482
    assert m(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    assert head_names(m) == ("classifier.6.weight", "classifier.6.bias")
    wide = build_model("compact", 7, width=0.5, in_size=28)
    assert wide(torch.randn(3, 3, 28, 28)).shape == (3, 7)
    assert build_model("alexnet", 10, head="replace").classifier[6].out_features == 10
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet9", 10)
    with pytest.raises(ValueError, match="bad options"):
        build_model("compact", 10, depth=3)
    with pytest.raises(ValueError, match="num_classes"):
        compact_alexnet(num_classes=0)
    # channels-last is an implementation detail: same outputs as the plain layout
    a = compact_alexnet(channels_last=False).eval()
    b = compact_alexnet(channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-5)


def test_compact_trains():
    """A few Adam steps on a fixed batch drive the loss down (the network can learn)."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    m = init_glorot_(compact_alexnet(dropout=0.0), seed=0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_init_glorot_statistics():
    m = nn.Sequential(nn.Conv2d(64, 128, 5), nn.Linear(900, 700), nn.BatchNorm1d(3))
    m[2].weight.data.fill_(0.5)
    init_glorot_(m, seed=0)
    conv, lin = m[0].weight, m[1].weight
    fan_in, fan_out = 64 * 25, 128 * 25
    sd = math.sqrt(2 / (fan_in + fan_out))
    assert conv.std().item() == pytest.approx(sd, rel=0.02)
    assert conv.abs().max().item() <= 2 * sd / 0.87962566103423978 + 1e-7  # truncated at 2 sd
    assert abs(conv.mean().item()) < 0.05 * sd
    limit = math.sqrt(6 / (900 + 700))
    assert lin.abs().max().item() <= limit and lin.abs().max().item() > 0.99 * limit
    assert lin.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.02)
    assert torch.all(m[0].bias == 0) and torch.all(m[1].bias == 0)
    assert torch.all(m[2].weight == 0.5)  # not a conv/dense layer: untouched
    # deterministic per seed, different across seeds
    a = init_glorot_(compact_alexnet(), seed=3).state_dict()
    b = init_glorot_(compact_alexnet(), seed=3).state_dict()
    c = init_glorot_(compact_alexnet(), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])
    with pytest.raises(ValueError, match="seed or generator"):
        init_glorot_(m, seed=1, generator=torch.Generator())
