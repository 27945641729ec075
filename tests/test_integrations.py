"""Freeze-SGD with plain torch tools people train with: torch.compile, bf16 autocast, fp16 with
GradScaler (a skipped step changes nothing and resets nothing), half-precision parameters."""
import pytest
import torch
from torch import nn

from polarity import Freezer, Template, impose


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)).to(dtype)


def _train(model, freezer, opt, steps=8, autocast=None, scaler=None, dtype=torch.float32):
    """Train on random data; the violations after every optimizer step."""
    freezer.attach(opt)
    after = []
    opt.register_step_post_hook(lambda *a: after.append(freezer.violations()))
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 8, generator=g).to(dtype)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            loss = model(x).float().pow(2).mean()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    return after


def test_compiled_model_keeps_signs_after_every_step():
    model = _net()
    template = Template.random(model, seed=0)
    compiled = torch.compile(model)  # the inductor backend; names get the _orig_mod. prefix
    impose(compiled, template)
    freezer = Freezer(compiled, template, seed=1)
    after = _train(compiled, freezer, torch.optim.Adam(compiled.parameters(), lr=0.5), steps=5)
    assert after == [0] * 5 and int(freezer.total_reset) > 0
    assert sum(template.violations(model).values()) == 0


def test_bf16_autocast_keeps_signs():
    model = _net()
    template = Template.random(model, seed=0)
    impose(model, template)
    freezer = Freezer(model, template, seed=1)
    after = _train(model, freezer, torch.optim.Adam(model.parameters(), lr=0.5),
                   autocast=torch.bfloat16)
    assert after == [0] * 8 and int(freezer.total_reset) > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_parameters_keep_signs(dtype):
    model = _net(dtype)
    template = Template.random(model, seed=0)
    impose(model, template)
    freezer = Freezer(model, template, seed=1)
    after = _train(model, freezer, torch.optim.SGD(model.parameters(), lr=2.0), dtype=dtype)
    assert after == [0] * 8 and int(freezer.total_reset) > 0
    assert all(p.dtype == dtype for p in model.parameters())


@pytest.mark.parametrize("fused", [False, True])
def test_a_step_the_grad_scaler_skips_changes_no_weight_and_resets_nothing(fused):
    model = _net()
    template = Template.random(model, seed=0)
    impose(model, template)
    freezer = Freezer(model, template, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.5, fused=fused)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    after = _train(model, freezer, opt, steps=4, autocast=torch.float16, scaler=scaler)
    assert after == [0] * 4 and int(freezer.total_reset) > 0
    steps, total = freezer.steps, int(freezer.total_reset)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = model(torch.full((4, 8), float("inf"))).float().sum()
    scaler.scale(loss).backward()
    scaler.step(opt)  # an inf gradient: the scaler skips the update
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert int(freezer.total_reset) == total
    # the unfused optimizer's step() is never called; the fused one is told to skip inside it
    assert freezer.steps == steps + fused
