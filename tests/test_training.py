"""The training primitives: one optimizer step per batch in the permutation's order, epoch
means, evaluation, and their place below both transfer and the experiments."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import polarity
from polarity.training import _means, compute_mode, evaluate, fit, make_optimizer

torch.set_num_threads(1)


def _data(n=10, d=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_fit_steps_once_per_batch_in_permutation_order():
    torch.manual_seed(0)
    x, y = _data()
    model = torch.nn.Linear(4, 3)
    opt = make_optimizer(model, 1e-2)
    seen, steps, epochs = [], [], []
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    opt.register_step_post_hook(lambda o, a, k: steps.append(1))
    perms = [torch.randperm(10, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    hist = fit(model, opt, x, y, None, perms, batch_size=4,
               on_epoch=lambda e, tl, ta: epochs.append((e, tl, ta)))
    assert len(steps) == 2 * 3  # batches of 4, 4, 2 per epoch
    expect = [x[p[i:i + 4]] for p in perms for i in (0, 4, 8)]
    assert len(seen) == len(expect) and all(torch.equal(a, b) for a, b in zip(seen, expect))
    assert [e for e, _, _ in epochs] == [1, 2]
    assert hist == [(tl, ta) for _, tl, ta in epochs]
    assert all(0.0 <= ta <= 1.0 and tl > 0 for tl, ta in hist)


def test_fit_transforms_each_batch():
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(6) % 2
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    calls = []

    def transform(xb):
        calls.append(xb.dtype)
        return xb.float() / 255

    fit(model, make_optimizer(model, 1e-3), x, y, transform, [torch.arange(6)], batch_size=4)
    assert calls == [torch.uint8, torch.uint8]


def test_evaluate_is_the_mean_loss_and_accuracy_in_eval_mode():
    torch.manual_seed(0)
    x, y = _data(n=7)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    model.train()
    loss, acc = evaluate(model, x, y, None, batch_size=3)
    assert not model.training
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert acc == float((logits.argmax(1) == y).float().mean())


def test_make_optimizer_is_adam_over_trainable_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].weight.requires_grad_(False)
    opt = make_optimizer(model, 0.01)
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 0.01
    held = [p for g in opt.param_groups for p in g["params"]]
    assert len(held) == 3 and all(p.requires_grad for p in held)


def test_one_read_of_the_device_gives_the_values_of_two():
    """_means (one stacked read) equals float(loss_sum) / n, int(correct) / n bit for bit."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        loss_sum = (torch.rand((), generator=g) * 10 ** torch.randint(-3, 6, (), generator=g)).float()
        n = int(torch.randint(1, 60001, (), generator=g))
        correct = torch.randint(0, n + 1, (), generator=g)
        assert _means(loss_sum, correct, n) == (float(loss_sum) / n, int(correct) / n)


def _conv_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Dropout(0.2), torch.nn.Linear(4 * 6 * 6, 3))


def _train(model, **mode):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, 8, 8, generator=g), torch.randint(0, 3, (12,), generator=g)
    perms = [torch.randperm(12, generator=g) for _ in range(2)]
    opt = make_optimizer(model, 1e-2)
    torch.manual_seed(2)
    if not mode:
        return fit(model, opt, x, y, None, perms, 5), evaluate(model, x, y, None, batch_size=5)
    with compute_mode(model, "cpu", **mode):
        return fit(model, opt, x, y, None, perms, 5), evaluate(model, x, y, None, batch_size=5)


def test_compute_mode_fp32_on_the_cpu_changes_nothing():
    plain, moded = _conv_net(), _conv_net()
    assert _train(plain) == _train(moded, precision="fp32")
    assert _train(_conv_net(), precision="tf32") == _train(_conv_net())  # TF32 is CUDA's
    for a, b in zip(plain.parameters(), moded.parameters()):
        assert torch.equal(a, b) and a.stride() == b.stride()
    assert not moded._forward_pre_hooks and not moded._forward_hooks


def test_compute_mode_channels_last_and_bf16():
    model = _conv_net()
    seen = []
    model[0].register_forward_hook(lambda m, a, out: seen.append((out.dtype, a[0].is_contiguous(
        memory_format=torch.channels_last), m.weight.is_contiguous(memory_format=torch.channels_last))))
    x = torch.randn(2, 3, 8, 8)
    with compute_mode(model, "cpu", precision="bf16", channels_last=True):
        out = model(x)
        assert out.dtype == torch.float32  # the loss sees float32 logits
        assert model[0].weight.dtype == torch.float32  # parameters stay float32
    assert seen[-1] == (torch.bfloat16, True, True)
    assert model[0].weight.is_contiguous() and not torch.is_autocast_enabled("cpu")
    assert len(model._forward_pre_hooks) == 0 and len(model._forward_hooks) == 0
    assert model(x).dtype == torch.float32 and seen[-1][0] == torch.float32
    # trained in these modes, the numbers stay close to float32's
    ref = _train(_conv_net())
    cl = _train(_conv_net(), channels_last=True)
    bf = _train(_conv_net(), precision="bf16")
    assert cl[1] == pytest.approx(ref[1], rel=1e-4)
    assert bf[1][0] == pytest.approx(ref[1][0], rel=5e-2)


def test_compute_mode_sets_and_restores_cudas_tf32_flags():
    """On CUDA, fp32 is strict float32 (PyTorch allows TF32 convolutions by default), tf32
    allows TF32; the flags come back afterwards.  (Flags only: no GPU is needed to set them.)"""
    from polarity.training import _tf32_settings

    model = torch.nn.Linear(2, 2)
    before = [getattr(obj, name) for obj, name, _, _ in _tf32_settings()]
    for precision, want in (("fp32", 3), ("tf32", 2)):
        with compute_mode(model, "cuda", precision=precision):
            now = [getattr(obj, name) for obj, name, _, _ in _tf32_settings()]
            assert now == [s[want] for s in _tf32_settings()]
        assert [getattr(obj, name) for obj, name, _, _ in _tf32_settings()] == before
    with compute_mode(model, "cpu", precision="fp32"):  # the CPU leaves them alone
        assert [getattr(obj, name) for obj, name, _, _ in _tf32_settings()] == before


def test_compute_mode_leaves_autocast_when_the_forward_fails():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(RuntimeError):
        with compute_mode(model, "cpu", precision="bf16"):
            model(torch.randn(2, 5))  # wrong width
    assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        with compute_mode(model, "cpu", precision="fp16"):
            pass


LIBRARY = ("training.py", "transfer.py", "files.py", "data", "models", "analysis")


def test_library_modules_do_not_import_the_experiments():
    """transfer and training sit below the experiments: no import of polarity.experiments, at
    module level or inside a function."""
    src = Path(polarity.__file__).parent
    files = [f for name in LIBRARY for f in ([src / name] if name.endswith(".py")
                                             else sorted((src / name).rglob("*.py")))]
    assert len(files) > 6
    for f in files:
        package = ".".join(["polarity", *f.relative_to(src).parent.parts])
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                names = [".".join([*base, node.module or ""])] + [
                    ".".join([*base, node.module or "", a.name]).replace("..", ".") for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith("polarity.experiments") for n in names), (f, ast.dump(node))
