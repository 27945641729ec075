"""The GPU check (issue 15): everything GPU-specific checked and measured in one short run.

    bash benchmarks/gpu_check.sh              # one CUDA GPU: at most 8 minutes, no downloads
    bash benchmarks/gpu_check.sh --smoke      # the same code paths on the CPU, tiny sizes (~1 min)

One JSON object per line, to ``$OUT/gpu_check.jsonl`` when ``$OUT`` is set (or ``--out FILE``)
and to stdout.  Every line has ``check`` (its name), ``ok`` (true/false for a check, null for a
measurement) and ``elapsed_s``; a part that raises is a failed check with its error.  The last
line is ``summary``.  Exit status: 0 every check passed, 1 one failed, 2 no CUDA device without
``--smoke``.

Correctness (all must pass):
  transform_device_vs_host  the device pipeline (uint8 to the GPU, then normalise and resize)
                            against the host's, max |diff| <= 5e-5 (outputs within +-4.2)
  freezer_device_vs_cpu     Freezer on the GPU vs on the CPU, same seed and step: identical
                            reset values (bit for bit) for all four methods in float32 (CPU:
                            numba loop) and bfloat16 (CPU: torch ops), AlexNet's 61M parameters,
                            posRand also with channels-last parameters
  frozen_run_no_violations  AlexNet-227 with fused Adam and a Freezer: 0 violations after every
                            step, in fp32 and in bf16 + channels-last; resets do happen
  xor_device_vs_cpu         the XOR-5D trainer's torch path on the GPU vs its CPU paths (torch
                            ops, and the numba kernels), float64: params rtol 1e-9 / atol 1e-10,
                            per-epoch records atol 1e-6; 0 violations
  host_syncs                host syncs (torch.cuda.set_sync_debug_mode) in one epoch of fit with
                            a Freezer (<= 2) and one evaluate (<= 1)
Speed (measurements):
  reset_cost                Freezer.project() on 61M AlexNet parameters (1% violating) against a
                            device copy of them and a fused Adam step: reset_over_copy,
                            reset_over_fused_adam
  train_throughput          AlexNet-227 training images/s, fluid and frozen (freezer_slowdown),
                            batch 1000 and the grid's smaller batches, fp32 (the paper's), bf16 +
                            channels-last, tf32; uint8 batches transformed on the GPU
  paper_epoch               one epoch of the paper preset at n = 50,000 (CIFAR-10, or synthetic
                            uint8 images of its shape when it is not on the machine: ``data``
                            says which) with validation on the whole test split, through the
                            protocol (polarity.experiments.images.protocol.run_trial)
  paper_gpu_hours           the paper preset's total GPU-hours per dataset and precision,
                            extrapolated from the measured step, validation and per-condition
                            times over its whole grid (20 trials x 6 conditions x n)
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from polarity import Freezer, RESET_METHODS, Template, __version__, impose
from polarity.data.images import (CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, FMNIST_MEAN,
                                  FMNIST_STD, BatchTransform, DatasetCorruptError,
                                  DatasetNotFoundError, ImageData,
                                  load_dataset, to_device)
from polarity.experiments import get
from polarity.experiments.images import protocol
from polarity.experiments.images.presets import epochs_for, eval_epochs
from polarity.models import build_model, init_glorot_
from polarity.training import compute_mode, evaluate, fit, make_optimizer

_MODELS: dict[tuple, torch.nn.Module] = {}
MODES = {"fp32": dict(precision="fp32"), "bf16-cl": dict(precision="bf16", channels_last=True),
         "tf32": dict(precision="tf32")}


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the GPU sizes, or the smoke test's tiny ones on the CPU."""

    device: str
    arch: str  # the model of every part: torchvision AlexNet (61M) or the compact network
    in_size: int
    width: float
    batch: int  # the paper's batch
    small_batches: tuple[int, ...]  # the grid's partial batches (extrapolation)
    steps: int  # steps per timed epoch
    repeats: int
    check_batch: int
    check_steps: int
    epoch_n: int
    epoch_val: int
    eval_batch: int
    xor_epochs: int
    threads: int
    budget_s: float
    optional_s: float  # time an optional measurement (another precision) must have left

    def model(self) -> torch.nn.Module:
        """A copy of one Glorot-initialised model, on the CPU (built once: torchvision's
        AlexNet takes seconds to build and initialise)."""
        key = (self.arch, self.in_size, self.width)
        if key not in _MODELS:
            kw = {"head": "append"} if self.arch == "alexnet" else {"in_size": self.in_size, "width": self.width}
            _MODELS[key] = build_model(self.arch, 10, **kw)
            init_glorot_(_MODELS[key], 0)
        return copy.deepcopy(_MODELS[key])

    def preset_overrides(self) -> dict:
        if self.arch == "alexnet":
            return {}
        return {"arch": self.arch, "in_size": self.in_size, "model_width": self.width,
                "batch_size": self.batch}


GPU = Sizes(device="cuda", arch="alexnet", in_size=227, width=1.0, batch=1000,
            small_batches=(100, 250, 500, 750), steps=8, repeats=3, check_batch=128,
            check_steps=6, epoch_n=50_000, epoch_val=10_000, eval_batch=250, xor_epochs=6,
            threads=min(8, os.cpu_count() or 1), budget_s=420.0, optional_s=60.0)
SMOKE = Sizes(device="cpu", arch="compact", in_size=32, width=0.25, batch=20, small_batches=(10,),
              steps=2, repeats=1, check_batch=8, check_steps=3, epoch_n=200, epoch_val=60,
              eval_batch=1000, xor_epochs=3, threads=1, budget_s=150.0, optional_s=5.0)


# ----------------------------------------------------------------------------- plumbing

class Run:
    """Writes the JSON lines, keeps the budget, turns exceptions into failed checks."""

    def __init__(self, out: Path | None, budget_s: float):
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.out = out
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.results: dict[str, dict] = {}
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def emit(self, rec: dict) -> None:
        rec = {**rec, "elapsed_s": round(self.elapsed(), 2)}
        line = json.dumps(rec, default=str)
        print(line, flush=True)
        if self.out is not None:
            with open(self.out, "a") as f:
                f.write(line + "\n")

    def part(self, name: str, fn, *args, need_s: float = 0.0) -> dict | None:
        if self.left() < need_s:
            self.skipped.append(name)
            self.emit({"check": name, "ok": None, "skipped": f"budget: {self.left():.0f} s left, "
                                                                f"needs ~{need_s:.0f} s"})
            return None
        t = time.perf_counter()
        try:
            rec = fn(*args)
        except Exception as e:  # a part that breaks is a failed check, the others still run
            rec = {"ok": False, "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc().splitlines()[-12:]}
        rec = {"check": name, **rec, "wall_s": round(time.perf_counter() - t, 2)}
        if rec.get("ok") is False:
            self.failed.append(name)
        self.results[name] = rec
        self.emit(rec)
        return rec


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def images(n: int, channels: int = 3, side: int = 32, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x.to(device), y.to(device)


def cifar_transform(cfg: Sizes, channels_last: bool = False) -> BatchTransform:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return BatchTransform(CIFAR10_MEAN, CIFAR10_STD, size=cfg.in_size, rgb=True, memory_format=fmt)


def env(cfg: Sizes, smoke: bool) -> dict:
    cuda = torch.cuda.is_available()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"ok": None, "smoke": smoke, "device": cfg.device,
            "gpu": torch.cuda.get_device_name(0) if cuda and cfg.device == "cuda" else None,
            "capability": list(torch.cuda.get_device_capability(0)) if cuda and cfg.device == "cuda" else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "polarity": __version__,
            "commit": commit, "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "arch": cfg.arch, "in_size": cfg.in_size}


# ----------------------------------------------------------------------------- correctness

def transform_device_vs_host(cfg: Sizes) -> dict:
    worst, out = 0.0, {}
    for name, c, side, mean, std in (("fmnist", 1, 28, FMNIST_MEAN, FMNIST_STD),
                                     ("cifar10", 3, 32, CIFAR10_MEAN, CIFAR10_STD)):
        x, _ = images(256, c, side, seed=1)
        t = BatchTransform(mean, std, size=cfg.in_size, rgb=True)
        host = t(x)
        dev = t(to_device(x, cfg.device)).cpu()
        cl = BatchTransform(mean, std, size=cfg.in_size, rgb=True,
                            memory_format=torch.channels_last)(to_device(x, cfg.device))
        d = float((dev - host).abs().max())
        out[name] = {"max_abs_diff": d, "channels_last_equal": bool(torch.equal(cl.cpu(), dev)),
                     "range": [float(host.min()), float(host.max())]}
        worst = max(worst, d)
    paths = _trial_data_paths(cfg)
    ok = (worst <= 5e-5 and all(v["channels_last_equal"] for v in out.values())
          and paths["batches_equal"] and paths["fit_loss_finite"])
    return {"ok": ok, "tolerance": 5e-5, "max_abs_diff": worst, **out, "trial_data": paths}


def _trial_data_paths(cfg: Sizes) -> dict:
    """The protocol's two homes for a trial's uint8 images, per-batch transforms: on the device
    (they fit) and in page-locked host memory (they do not; each batch is sent on its own).
    Both must give the same batches, and training from the host copy must run."""
    x, y = images(48, seed=3)
    vx, vy = images(16, seed=4)
    data = ImageData("cifar10", "synthetic", x, y, vx, vy, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD)
    hp = dataclasses.replace(get("cifar10").presets["paper"], **cfg.preset_overrides(), val_size=16)
    saved = protocol.PRETRANSFORM_BYTES, protocol.fits_on_device
    try:
        protocol.PRETRANSFORM_BYTES = 0  # per-batch transforms, as for large n
        resident = protocol.trial_data(hp, data, 48, cfg.device)
        protocol.fits_on_device = lambda nbytes, device: False
        host = protocol.trial_data(hp, data, 48, cfg.device)
    finally:
        protocol.PRETRANSFORM_BYTES, protocol.fits_on_device = saved
    idx = torch.randperm(48)[:8]

    def batch(sets):
        return sets.train_tf(to_device(sets.train_x[to_device(idx, sets.train_x.device)], cfg.device))

    model = cfg.model().to(cfg.device)
    hist = fit(model, make_optimizer(model, 1e-3), host.train_x, host.train_y, host.train_tf,
               [torch.randperm(48)], 16, device=cfg.device)
    return {"resident_on": str(resident.train_x.device), "host_on": str(host.train_x.device),
            "host_pinned": bool(host.train_x.is_pinned()) if cfg.device == "cuda" else None,
            "batches_equal": bool(torch.equal(batch(resident), batch(host))),
            "fit_loss_finite": math.isfinite(hist[0][0])}


def freezer_device_vs_cpu(cfg: Sizes) -> dict:
    seed, step = 1234, 41
    base = cfg.model()
    template = Template.random(base, seed=1)  # about half of every constrained entry violates
    rows, ok = [], True
    for dtype in (torch.float32, torch.bfloat16):
        for method in RESET_METHODS:
            ref = copy.deepcopy(base).to(dtype)
            fz = Freezer(ref, template, reset=method, seed=seed)
            fz.load_state_dict({**fz.state_dict(), "steps": step - 1})
            k_ref = fz.project(sync=True)
            layouts = ("contiguous", "channels_last") if method == "posRand" else ("contiguous",)
            for layout in layouts:
                dev = copy.deepcopy(base).to(device=cfg.device, dtype=dtype)
                if layout == "channels_last":
                    dev.to(memory_format=torch.channels_last)
                fd = Freezer(dev, template, reset=method, seed=seed)
                fd.load_state_dict({**fd.state_dict(), "steps": step - 1})
                k_dev = fd.project(sync=True)
                differ = sum(int((a.detach() != b.detach().cpu()).sum())
                             for a, b in zip(ref.parameters(), dev.parameters()))
                good = differ == 0 and k_dev == k_ref and k_ref > 0 and fd.violations() == 0
                ok &= good
                rows.append({"dtype": str(dtype).replace("torch.", ""), "method": method,
                             "layout": layout, "reset_entries": k_ref, "entries_differing": differ,
                             "ok": good})
    from polarity import _numba

    return {"ok": ok, "parameters": sum(p.numel() for p in base.parameters()),
            "constrained": template.numel(), "seed": seed, "step": step,
            "cpu_float32_backend": "numba" if _numba.AVAILABLE else "torch",
            "cpu_bfloat16_backend": "torch", "cases": rows}


def frozen_run_no_violations(cfg: Sizes) -> dict:
    model = cfg.model().to(cfg.device)
    template = Template.random(model, seed=3)
    impose(model, template)
    n = cfg.check_batch * cfg.check_steps
    x, y = images(n, seed=2, device=cfg.device)
    out, ok = {}, True
    for mode in ("fp32", "bf16-cl"):
        opt = make_optimizer(model, 1e-2)  # a large rate: many sign violations to reset
        fused = bool(opt.defaults.get("fused"))
        fz = Freezer(model, template, reset="posRand", seed=0)
        handle = fz.attach(opt)
        viol, resets = [], []

        def after(o, a, k):  # runs after the Freezer's own hook
            viol.append(fz.violations())
            resets.append(int(fz.last_reset))

        h2 = opt.register_step_post_hook(after)
        tf = cifar_transform(cfg, MODES[mode].get("channels_last", False))
        with compute_mode(model, cfg.device, **MODES[mode]):
            hist = fit(model, opt, x, y, tf, [torch.randperm(n)], cfg.check_batch, device=cfg.device)
        handle.remove()
        h2.remove()
        good = (len(viol) == cfg.check_steps and all(v == 0 for v in viol) and sum(resets) > 0
                and (fused or cfg.device == "cpu") and math.isfinite(hist[0][0]))
        ok &= good
        out[mode] = {"ok": good, "fused_adam": fused, "steps": len(viol),
                     "violations_after_each_step": viol, "resets_per_step": resets,
                     "train_loss": hist[0][0]}
    return {"ok": ok, **out}


def xor_device_vs_cpu(cfg: Sizes) -> dict:
    from polarity import _numba
    from polarity.experiments.xor5d import XorHparams, prepare_job, train_batched

    groups = [(0, 20), (0, 40), (1, 40), (1, 100)]  # partial batches, several n per program
    cols = [("frozen-sufficient", 7), ("frozen-rand", 12), ("fluid-rand", 12), ("fluid-sufficient", 5)]
    out, ok = {}, True
    for dtype, tol in (("float64", dict(rtol=1e-9, atol=1e-10)), ("float32", dict(rtol=1e-4, atol=1e-5))):
        hp = XorHparams(epochs=cfg.xor_epochs, dtype=dtype, reset="posRand", lr=0.1)
        job_cpu, _, _ = prepare_job(hp, groups, cols, "cpu")
        job_dev, _, _ = prepare_job(hp, groups, cols, cfg.device)
        dev = train_batched(job_dev, fused=False, check_violations=True)
        refs = {"cpu-torch": train_batched(job_cpu, fused=False, check_violations=True)}
        if _numba.NUMBA:
            t = time.perf_counter()
            refs["cpu-numba"] = train_batched(job_cpu, fused=True, check_violations=True)
            out[f"{dtype}_numba_s"] = round(time.perf_counter() - t, 2)
        for name, ref in refs.items():
            pd = max(float((ref.params[k].double() - dev.params[k].double()).abs().max()) for k in ref.params)
            params_close = all(torch.allclose(dev.params[k].double(), ref.params[k].double(), **tol)
                               for k in ref.params)
            rd = max(float((getattr(ref, f) - getattr(dev, f)).abs().max())
                     for f in ("train_loss", "train_acc", "val_loss", "val_acc"))
            # float32: networks may part ways after a near-zero sign decision; a check of the
            # float64 run, a report of the float32 one
            good = (params_close and rd <= 1e-6 and int(dev.violations.sum()) == 0) if dtype == "float64" else True
            ok &= good
            out[f"{dtype}_vs_{name}"] = {"ok": good, "max_param_diff": pd, "params_close": params_close,
                                         "max_record_diff": rd,
                                         "violations": int(dev.violations.sum())}
    return {"ok": ok, "networks": len(groups) * len(cols), "epochs": cfg.xor_epochs,
            "tolerance_float64": {"params": {"rtol": 1e-9, "atol": 1e-10}, "records": {"atol": 1e-6}}, **out}


def host_syncs(cfg: Sizes) -> dict:
    if cfg.device != "cuda":
        return {"ok": None, "skipped": "needs CUDA (torch.cuda.set_sync_debug_mode)"}
    model = cfg.model().to(cfg.device)
    template = Template.random(model, seed=3)
    impose(model, template)
    opt = make_optimizer(model, 1e-3)
    Freezer(model, template, reset="posRand", seed=0).attach(opt)
    n = 2 * cfg.batch
    x, y = images(n, seed=4, device=cfg.device)
    vx, vy = images(cfg.batch, seed=5, device=cfg.device)
    tf = cifar_transform(cfg)
    perm = torch.randperm(n)
    fit(model, opt, x, y, tf, [perm], cfg.batch, device=cfg.device)  # warm up: allocations, handles
    evaluate(model, vx, vy, tf, device=cfg.device, batch_size=cfg.eval_batch)
    counts = {}
    for name, fn in (("fit_epoch", lambda: fit(model, opt, x, y, tf, [perm], cfg.batch, device=cfg.device)),
                     ("evaluate", lambda: evaluate(model, vx, vy, tf, device=cfg.device,
                                                   batch_size=cfg.eval_batch))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        msgs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
        counts[name] = {"syncs": len(msgs), "first": msgs[:3]}
    ok = counts["fit_epoch"]["syncs"] <= 2 and counts["evaluate"]["syncs"] <= 1
    return {"ok": ok, "limits": {"fit_epoch": 2, "evaluate": 1}, "steps_per_epoch": 2, **counts}


# ----------------------------------------------------------------------------- speed

def reset_cost(cfg: Sizes) -> dict:
    model = cfg.model().to(cfg.device)
    params = list(model.parameters())
    template = Template.random(model, seed=0)
    impose(model, template)
    g = torch.Generator(device=cfg.device).manual_seed(1)
    data = [p.data for p in params]
    compliant = [p.detach().clone() for p in params]
    violating = []
    for name, p in model.named_parameters():
        w = p.detach().clone()
        if name in template:
            w[torch.rand(w.shape, generator=g, device=cfg.device) < 0.01] *= -1
        violating.append(w)
    freezer = Freezer(model, template, reset="posRand", seed=0)
    reps = max(3, 2 * cfg.repeats + 1)

    def median(fn, prepare=lambda: None):
        ts = []
        for _ in range(reps + 1):
            prepare()
            ts.append(timed(fn, cfg.device))
        return statistics.median(ts[1:])

    reset_s = median(freezer.project, lambda: torch._foreach_copy_(data, violating))
    resets = int(freezer.last_reset)
    copy_s = median(lambda: torch._foreach_copy_(data, compliant))
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = make_optimizer(model, 1e-3)
    opt.step()  # state allocated outside the timing
    adam_s = median(opt.step)
    return {"ok": None, "parameters": sum(p.numel() for p in params), "constrained": template.numel(),
            "violating_per_reset": resets, "fused_adam": bool(opt.defaults.get("fused")),
            "reset_ms": 1e3 * reset_s, "copy_ms": 1e3 * copy_s, "fused_adam_ms": 1e3 * adam_s,
            "reset_over_copy": reset_s / copy_s, "reset_over_fused_adam": reset_s / adam_s}


def _arms(cfg: Sizes) -> dict:
    """A fluid and a frozen (posRand Freezer) AlexNet with fused Adam, on the device."""
    arms = {}
    for arm in ("fluid", "frozen"):
        model = cfg.model().to(cfg.device)
        opt = make_optimizer(model, 1e-3)
        if arm == "frozen":
            template = Template.random(model, seed=1)
            impose(model, template)
            Freezer(model, template, reset="posRand", seed=0).attach(opt)
        arms[arm] = (model, opt)
    return arms


def _step_times(cfg: Sizes, mode: str, arms: dict, batch: int) -> dict:
    """Median seconds per training step at ``batch``, fluid and frozen, timed over epochs of
    ``cfg.steps`` steps through ``polarity.training.fit`` (uint8 batches transformed on the
    device, one host sync per epoch), fluid and frozen alternating."""
    n = batch * cfg.steps
    x, y = images(n, seed=6, device=cfg.device)
    tf = cifar_transform(cfg, MODES[mode].get("channels_last", False))
    perm = torch.randperm(n)
    times = {"fluid": [], "frozen": []}
    for r in range(cfg.repeats + 1):
        for arm in (("fluid", "frozen") if r % 2 == 0 else ("frozen", "fluid")):
            model, opt = arms[arm]
            with compute_mode(model, cfg.device, **MODES[mode]):
                t = timed(lambda: fit(model, opt, x, y, tf, [perm], batch, device=cfg.device), cfg.device)
            if r > 0:  # the first round warms up (kernels, allocator, cuDNN's choices)
                times[arm].append(t / cfg.steps)
    return {arm: statistics.median(v) for arm, v in times.items()}


def train_throughput(cfg: Sizes, run: Run) -> dict:
    out = {}
    for mode in MODES:
        if mode != "fp32" and run.left() < cfg.optional_s:
            out[mode] = {"skipped": "budget"}
            run.skipped.append(f"train_throughput/{mode}")
            continue
        rows = {}
        arms = _arms(cfg)  # per mode: an optimizer's state keeps the layout it was made in
        for b in (cfg.batch, *cfg.small_batches):
            if mode == "tf32" and b != cfg.batch:
                continue  # tf32: throughput only, no extrapolation
            st = _step_times(cfg, mode, arms, b)
            rows[b] = {"step_s_fluid": st["fluid"], "step_s_frozen": st["frozen"],
                       "images_per_s_fluid": b / st["fluid"], "images_per_s_frozen": b / st["frozen"],
                       "freezer_slowdown": st["frozen"] / st["fluid"]}
        top = rows[cfg.batch]
        out[mode] = {"batch": cfg.batch, "images_per_s_fluid": top["images_per_s_fluid"],
                     "images_per_s_frozen": top["images_per_s_frozen"],
                     "freezer_slowdown": top["freezer_slowdown"], "by_batch": rows}
    return {"ok": None, "arch": cfg.arch, "in_size": cfg.in_size, "steps_per_timing": cfg.steps,
            "repeats": cfg.repeats, **out}


def paper_data(cfg: Sizes, synthetic: bool) -> tuple[ImageData, str]:
    """CIFAR-10 when it is on this machine (no download), else synthetic uint8 images of its
    shape; the smoke test always uses synthetic ones."""
    if not synthetic:
        try:
            data = load_dataset("cifar10", workers=min(8, os.cpu_count() or 1))
            if len(data.train_y) >= cfg.epoch_n and len(data.test_y) >= cfg.epoch_val:
                return data, data.label
        except (DatasetNotFoundError, DatasetCorruptError):
            pass
    x, y = images(cfg.epoch_n, seed=7)
    vx, vy = images(cfg.epoch_val, seed=8)
    return (ImageData("cifar10", "synthetic uint8 (CIFAR-10 shape)", x, y, vx, vy, CIFAR10_CLASSES,
                      CIFAR10_MEAN, CIFAR10_STD),
            "synthetic uint8 images of CIFAR-10's shape (CIFAR-10 is not on this machine)")


def paper_epoch(cfg: Sizes, run: Run, synthetic: bool) -> dict:
    data, label = paper_data(cfg, synthetic)
    exp = get("cifar10")
    out = {}
    for mode in ("fp32", "bf16-cl"):
        if mode != "fp32" and run.left() < cfg.optional_s:
            out[mode] = {"skipped": "budget"}
            run.skipped.append(f"paper_epoch/{mode}")
            continue
        # the paper preset for one epoch of its largest CIFAR-10 n; the rand arms need no source
        hp = dataclasses.replace(exp.presets["paper"], **cfg.preset_overrides(),
                                 sample_sizes=(cfg.epoch_n,), epochs=1, min_steps=0,
                                 val_size=cfg.epoch_val, conditions=("fluid-rand", "frozen-rand"),
                                 source="none", **MODES[mode])
        exp.validate(hp)
        t = time.perf_counter()
        results = protocol.run_trial(hp, cfg.epoch_n, 0, hp.conditions, device=cfg.device, data=data)
        job_s = time.perf_counter() - t
        # validation alone, as the protocol runs it, for the extrapolation
        sets = protocol.trial_data(hp, data, cfg.epoch_n, cfg.device)
        model = cfg.model().to(cfg.device)
        eval_bs = 1000 if hp.arch == "compact" else 250
        with compute_mode(model, cfg.device, hp.precision, hp.channels_last):
            evaluate(model, sets.val_x, sets.val_y, sets.val_tf, device=cfg.device, batch_size=eval_bs)
            val_s = statistics.median(
                timed(lambda: evaluate(model, sets.val_x, sets.val_y, sets.val_tf, device=cfg.device,
                                       batch_size=eval_bs), cfg.device) for _ in range(2))
        out[mode] = {"epoch_s": {r.key.condition: r.wall_s for r in results}, "val_s": val_s,
                     "job_shared_s": job_s - sum(r.wall_s for r in results),
                     "val_acc": {r.key.condition: r.epochs[-1].val_acc for r in results},
                     "train_images_on": str(sets.train_x.device),
                     "train_images_dtype": str(sets.train_x.dtype).replace("torch.", "")}
    return {"ok": None, "data": label, "n": cfg.epoch_n, "val_images": cfg.epoch_val,
            "batch": cfg.batch, "conditions": ["fluid-rand", "frozen-rand"],
            "note": "epoch_s: one condition's wall time for one epoch (start measures, training, "
                    "validation on the whole test split, end measures); job_shared_s: what the "
                    "conditions of a job share (data to the device, model, initialisation)", **out}


def _interp(times: dict[int, float], b: int) -> float:
    """Step time at batch ``b`` by linear interpolation between measured batches (the nearest
    measured one outside their range)."""
    ks = sorted(times)
    if b <= ks[0]:
        return times[ks[0]]
    if b >= ks[-1]:
        return times[ks[-1]] * b / ks[-1]
    for lo, hi in zip(ks, ks[1:]):
        if lo <= b <= hi:
            return times[lo] + (times[hi] - times[lo]) * (b - lo) / (hi - lo)
    raise AssertionError


def paper_gpu_hours(cfg: Sizes, run: Run) -> dict:
    thr, ep = run.results.get("train_throughput"), run.results.get("paper_epoch")
    if not thr or not ep or thr.get("ok") is False or ep.get("ok") is False:
        run.skipped.append("paper_gpu_hours")
        return {"ok": None, "skipped": "needs train_throughput and paper_epoch, which did not run"}
    out = {}
    for mode in ("fp32", "bf16-cl"):
        t, e = thr.get(mode, {}), ep.get(mode, {})
        if "by_batch" not in t or "epoch_s" not in e:
            continue
        step = {arm: {int(b): r[f"step_s_{arm}"] for b, r in t["by_batch"].items()}
                for arm in ("fluid", "frozen")}
        val_s = e["val_s"]

        def train_epoch(n, arm, batch):
            full, rest = divmod(n, batch)
            return full * _interp(step[arm], batch) + (_interp(step[arm], rest) if rest else 0.0)

        # what one condition's job costs beyond its training steps and validation (start and
        # end measures, model and optimizer set-up): the measured epoch less the modelled parts
        overhead, epoch_model = {}, {}
        for cond, wall in e["epoch_s"].items():
            arm = "frozen" if cond.startswith("frozen-") else "fluid"
            train_s = train_epoch(cfg.epoch_n, arm, cfg.batch)
            overhead[arm] = max(0.0, wall - train_s - val_s)
            epoch_model[cond] = {"measured_s": wall, "train_s_from_step_times": train_s,
                                 "validation_s": val_s, "rest_s": wall - train_s - val_s}
        per = {}
        for ds in ("cifar10", "fmnist"):
            hp = get(ds).presets["paper"]
            if cfg.arch != "alexnet":  # the smoke run: the paper grid, timed with the tiny model
                hp = dataclasses.replace(hp, batch_size=cfg.batch)
            secs = {"train": 0.0, "validation": 0.0, "overhead": 0.0}
            train_images = val_images = 0
            nval = 10_000  # the whole test split of both datasets
            for n in hp.sample_sizes:
                epochs, evals = epochs_for(hp, n), len(eval_epochs(hp, n))
                for cond in hp.conditions:
                    arm = "frozen" if cond.startswith("frozen-") else "fluid"
                    secs["train"] += hp.trials * epochs * train_epoch(n, arm, hp.batch_size)
                    secs["validation"] += hp.trials * evals * val_s * nval / cfg.epoch_val
                    secs["overhead"] += hp.trials * overhead[arm]
                    train_images += hp.trials * epochs * n
                    val_images += hp.trials * evals * nval
                secs["overhead"] += hp.trials * e["job_shared_s"]  # one job per (n, trial)
            per[ds] = {"gpu_hours": sum(secs.values()) / 3600,
                       "hours": {k: v / 3600 for k, v in secs.items()},
                       "trainings": len(hp.sample_sizes) * len(hp.conditions) * hp.trials,
                       "sample_sizes": list(hp.sample_sizes), "train_images": train_images,
                       "val_images": val_images}
        out[mode] = {**per, "overhead_s_per_condition": overhead, "job_shared_s": e["job_shared_s"],
                     "epoch_breakdown": epoch_model}
    return {"ok": None, "method": "sum over the paper grid (trials x conditions x n) of epochs x "
                                  "measured step times (batch 1000 and the partial batches) + "
                                  "validations x measured whole-test-split validation + per-job "
                                  "overhead (measured epoch less those two); one job at a time on "
                                  "one GPU, ImageNet weights already cached",
            "smoke": cfg.device != "cuda", **out}


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (tests)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON lines file (default: $OUT/gpu_check.jsonl when $OUT is set)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip optional measurements beyond this many seconds (default: 420 GPU, 150 smoke)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic images even where CIFAR-10 is")
    args = ap.parse_args(argv)
    cfg = SMOKE if args.smoke else GPU
    if args.budget_s is not None:
        cfg = dataclasses.replace(cfg, budget_s=args.budget_s)
    out = args.out or (Path(os.environ["OUT"]) / "gpu_check.jsonl" if os.environ.get("OUT") else None)
    run = Run(out, cfg.budget_s)
    torch.set_num_threads(cfg.threads)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        run.emit({"check": "summary", "ok": False, "failed": ["env"],
                  "error": "no CUDA device: run on a GPU machine, or pass --smoke for the CPU"})
        return 2
    run.emit({"check": "env", **env(cfg, args.smoke)})
    run.part("transform_device_vs_host", transform_device_vs_host, cfg)
    run.part("freezer_device_vs_cpu", freezer_device_vs_cpu, cfg)
    run.part("frozen_run_no_violations", frozen_run_no_violations, cfg)
    run.part("xor_device_vs_cpu", xor_device_vs_cpu, cfg, need_s=20)
    run.part("host_syncs", host_syncs, cfg, need_s=10)
    run.part("reset_cost", reset_cost, cfg, need_s=10)
    run.part("train_throughput", train_throughput, cfg, run, need_s=40)
    run.part("paper_epoch", paper_epoch, cfg, run, args.synthetic or args.smoke, need_s=30)
    run.part("paper_gpu_hours", paper_gpu_hours, cfg, run)
    run.emit({"check": "summary", "ok": not run.failed, "failed": run.failed,
              "skipped": run.skipped, "smoke": args.smoke, "device": cfg.device,
              "wall_s": round(run.elapsed(), 1)})
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
