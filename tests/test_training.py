"""The training primitives: one optimizer step per batch in the permutation's order, epoch
means, evaluation, and their place below both transfer and the experiments."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import polarity
from polarity.training import evaluate, fit, make_optimizer

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
