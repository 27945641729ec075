"""Training throughput of the image experiment's step, with and without the freezer.

Prints ONE JSON line:
  images_per_s_fluid / images_per_s_frozen: training images per second (forward, backward, Adam
      step, plus the per-batch uint8 -> float transform), same model, data and batches, one
      process; the frozen run has a Freezer (posRand) attached to the optimizer;
  freezer_slowdown = frozen step time / fluid step time (goal <= 1.05);
  reset_ms_per_step: Freezer.project() alone;
  reset_fraction: reset_ms_per_step / step_ms_fluid, the freezer's own share of a step: the
      end-to-end ratio above moves by several percent with machine noise, this one does not;
  data_fraction: share of a fluid step spent in the data pipeline (index the uint8 images,
      BatchTransform: normalise, resize, grey->RGB).
Timings are the median over interleaved repeats (fluid, frozen, data alternate, so machine
noise hits all of them alike).  The uint8 images sit on the device and each batch is transformed
there (the protocol's device pipeline); ``--precision`` and ``--channels-last`` are the image
experiments' throughput options (``polarity.training.compute_mode``).

    python benchmarks/images.py                          # compact 32x32 on the CPU, 1 thread
    python benchmarks/images.py --arch alexnet --in-size 227 --batch 1000 --device cuda \
        --precision bf16 --channels-last
(benchmarks/gpu_check.sh measures the paper's configuration on a GPU in one go.)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="compact", choices=("compact", "alexnet"))
    ap.add_argument("--dataset", default="fmnist")
    ap.add_argument("--in-size", type=int, default=None, help="default: 32 compact, 227 alexnet")
    ap.add_argument("--width", type=float, default=0.5, help="compact width multiplier")
    ap.add_argument("--batch", type=int, default=50, help="default: the quick preset's")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16"))
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args(argv)

    from polarity import Freezer, Template, impose
    from polarity.data.images import load_dataset
    from polarity.models import build_model, init_glorot_
    from polarity.data.images import to_device
    from polarity.training import compute_mode, make_optimizer

    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    in_size = args.in_size or (32 if args.arch == "compact" else 227)
    data = load_dataset(args.dataset)
    need = args.batch * args.steps
    x = to_device(data.train_x[:need], device)
    y = to_device(data.train_y[:need], device)
    if len(y) < need:
        print(f"dataset has only {len(y)} training images; lower --batch/--steps", file=sys.stderr)
        return 2
    transform = data.transform(size=in_size, rgb=True, memory_format=(
        torch.channels_last if args.channels_last else torch.contiguous_format))
    kw = {"in_size": in_size, "width": args.width} if args.arch == "compact" else {"head": "append"}

    def make():
        m = build_model(args.arch, data.num_classes, **kw)
        init_glorot_(m, 0)
        return m.to(device)

    fluid = make()
    frozen = make()
    template = Template.random(frozen, seed=1)
    impose(frozen, template, "flip")
    opt_fluid = make_optimizer(fluid, 1e-3)
    opt_frozen = make_optimizer(frozen, 1e-3)
    freezer = Freezer(frozen, template, reset="posRand", seed=0)
    freezer.attach(opt_frozen)
    modes = contextlib.ExitStack()  # entered before the first optimizer step: Adam's state takes the layout
    for m in (fluid, frozen):
        modes.enter_context(compute_mode(m, device, args.precision, args.channels_last))
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(need, generator=g).to(device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def train(model, opt, steps):
        model.train()
        sync()
        t0 = time.perf_counter()
        for s in range(steps):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            xb, yb = transform(x[idx]), y[idx]
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        return time.perf_counter() - t0

    def data_only(steps):
        sync()
        t0 = time.perf_counter()
        acc = torch.zeros((), device=device)
        for s in range(steps):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            xb, _yb = transform(x[idx]), y[idx]  # labels are part of the pipeline
            acc += xb[0, 0, 0, 0]
        sync()
        return time.perf_counter() - t0

    def resets(steps):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            freezer.project()
        sync()
        return time.perf_counter() - t0

    train(fluid, opt_fluid, min(3, args.steps))
    train(frozen, opt_frozen, min(3, args.steps))
    data_only(min(3, args.steps))
    tf, tz, td, tr = [], [], [], []
    for r in range(args.repeats):
        order = [0, 1] if r % 2 == 0 else [1, 0]
        for o in order:
            if o == 0:
                tf.append(train(fluid, opt_fluid, args.steps))
            else:
                tz.append(train(frozen, opt_frozen, args.steps))
        td.append(data_only(args.steps))
        tr.append(resets(args.steps))
    modes.close()
    f, z, d, rs = (statistics.median(v) for v in (tf, tz, td, tr))
    out = {
        "arch": args.arch, "in_size": in_size, "width": args.width if args.arch == "compact" else None,
        "dataset": data.label, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "threads": args.threads, "device": device, "precision": args.precision,
        "channels_last": args.channels_last,
        "parameters": sum(p.numel() for p in fluid.parameters()),
        "images_per_s_fluid": need / f, "images_per_s_frozen": need / z,
        "freezer_slowdown": z / f, "reset_ms_per_step": 1e3 * rs / args.steps,
        "reset_fraction": rs / f,
        "data_fraction": d / f, "data_ms_per_step": 1e3 * d / args.steps,
        "step_ms_fluid": 1e3 * f / args.steps, "step_ms_frozen": 1e3 * z / args.steps,
        "torch": torch.__version__, "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
