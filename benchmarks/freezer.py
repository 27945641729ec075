"""Cost of one Freeze-SGD reset on an AlexNet-sized parameter set, against a plain copy of the
parameters and a fused Adam step, all measured in this process.

    .venv/bin/python benchmarks/freezer.py [--violations 0.01] [--repeats 7] [--device cpu]

Prints one JSON line.  ``reset_over_copy`` and ``reset_over_fused_adam`` are the ratios that
matter (goals: <= 1.5 each).  The CPU reset uses as many threads as torch (``torch_threads``);
``reset_over_copy_1thread`` compares it with a one-thread copy.  ``naive_over_copy`` is the dense
``where(w*t < 0, t*rand_like(w)*eps, w)`` for reference.  ``small_step_us`` is one step's reset
on a compliant 64-layer MLP of width 32 (the per-parameter overhead: binding checks, seeds, calls).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torchvision

import polarity
from polarity import Freezer, Template, impose


def timeit(fn, prepare, repeats, device):
    times = []
    for _ in range(repeats + 1):
        prepare()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first run warms caches / compiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--violations", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reset", default="posRand", choices=polarity.RESET_METHODS)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    model = torchvision.models.alexnet().to(device)
    params = [p for p in model.parameters()]
    template = Template.random(model, seed=0)
    impose(model, template)
    g = torch.Generator(device=device).manual_seed(1)
    compliant = [p.detach().clone() for p in params]
    violating = []
    for name, p in model.named_parameters():
        w = p.detach().clone()
        if name in template:
            w[torch.rand(w.shape, generator=g, device=device) < args.violations] *= -1
        violating.append(w)
    n_viol = sum(template.violations(dict(zip([n for n, _ in model.named_parameters()], violating))).values())

    def load_violating():
        torch._foreach_copy_(params_data, violating)

    params_data = [p.data for p in params]
    freezer = Freezer(model, template, reset=args.reset, seed=0)
    reset_s = timeit(lambda: freezer.project(), load_violating, args.repeats, device)
    assert sum(template.violations(model).values()) == 0

    copy_s = timeit(lambda: torch._foreach_copy_(params_data, compliant), lambda: None,
                    args.repeats, device)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    copy_1t_s = timeit(lambda: torch._foreach_copy_(params_data, compliant), lambda: None,
                       args.repeats, device)
    torch.set_num_threads(threads)

    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    opt.step()  # allocate the state
    fused_adam_s = timeit(opt.step, lambda: None, args.repeats, device)

    signs = [template.sign_tensors()[n].to(device) for n, _ in model.named_parameters() if n in template]
    ws = [p.data for n, p in model.named_parameters() if n in template]

    def naive():
        for w, t in zip(ws, signs):
            tf = t.to(w.dtype)
            w.copy_(torch.where(torch.sign(w) != tf, tf * torch.rand_like(w) * 1e-3, w))

    naive_s = timeit(naive, load_violating, max(2, args.repeats // 3), device)

    small = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(64)]).to(device)
    small_t = Template.random(small, seed=0)
    impose(small, small_t)
    small_f = Freezer(small, small_t, reset=args.reset, seed=0)
    small_s = timeit(lambda: [small_f.project() for _ in range(100)], lambda: None,
                     args.repeats, device) / 100

    print(json.dumps({
        "benchmark": "freezer",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "polarity": polarity.__version__,
        "params": sum(p.numel() for p in params),
        "constrained": template.numel(),
        "violating": n_viol,
        "reset": args.reset,
        "reset_s": round(reset_s, 5),
        "copy_s": round(copy_s, 5),
        "copy_1thread_s": round(copy_1t_s, 5),
        "fused_adam_s": round(fused_adam_s, 5),
        "naive_dense_s": round(naive_s, 5),
        "reset_over_copy": round(reset_s / copy_s, 3),
        "reset_over_fused_adam": round(reset_s / fused_adam_s, 3),
        "reset_over_copy_1thread": round(reset_s / copy_1t_s, 3),
        "naive_over_copy": round(naive_s / copy_s, 2),
        "small_step_us": round(small_s * 1e6, 1),
    }))


if __name__ == "__main__":
    main()
