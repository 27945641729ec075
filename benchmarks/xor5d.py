"""Benchmark of the batched XOR-5D trainer (issue 4).  Prints ONE JSON line.

* ``fig1_s``: wall time of every job of the ``fig1`` preset (11 sample sizes x 50 trials x 3
  conditions = 1650 networks, width 64, 100 epochs, validation every epoch) through
  ``Experiment.run_job`` — i.e. including data generation, initialisation and the assembly of the
  per-epoch ``TrialResult`` records, excluding the results database.
* ``naive_trial_s``: one network trained alone (``XORNet`` + ``torch.optim.Adam`` + a
  ``Freezer`` for frozen conditions + a validation pass per epoch), in this process,
  averaged over the fig1 sample sizes and its three conditions.  To keep the benchmark short
  only ``naive_epochs`` epochs are timed and the time is scaled to the preset's 100 epochs
  (``naive_scaled_from_epochs`` says so).
* ``batched_trial_s`` = ``fig1_s`` / networks; ``speedup`` = naive / batched.
* ``fig4_s``: wall time of the full ``fig4`` preset: widths {2..29, 30, 32, 48, 64} x 50 trials x
  3 conditions at every fig1 sample size n = 8 ... 500 (52,800 networks, 100 epochs, validation
  every epoch).  Jobs group networks by batches-per-epoch and width bucket (padding waste ~10%).
  ``fig4_n500_s`` is its n = 500 slice alone (the ``fig4-n500`` preset, 4,800 networks).
* The numba kernels are compiled (or loaded from cache) before timing.
* ``--fig4-run``: the whole ``polarity run xor5d --preset fig4 --workers 2`` (``--run-workers``)
  into a temporary run directory, the results store included: ``fig4_run_s`` (wall time, pool
  start-up included), ``fig4_run_commit_s`` (the driver's time in ``Store.commit_job``) and
  ``fig4_run_commit_fraction`` = commit / wall (goal <= 0.10).  ``--only-fig4-run`` skips the rest.

Goals on one CPU core: fig1_s <= 10, speedup >= 40, fig4_s <= 120.  torch and numba use one
thread.  Usage: ``python benchmarks/xor5d.py [--skip-fig4] [--fig4-n500] [--naive-epochs K]
[--fig4-run [--run-workers N] [--only-fig4-run]]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def steal_s() -> float:
    """CPU time the hypervisor gave to other guests (Linux /proc/stat), in seconds: on a shared VM
    it says how much a timing was disturbed."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def run_preset(exp, hp) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    c0 = time.process_time()
    n = 0
    for job in exp.jobs(hp):
        n += len(exp.run_job(hp, job))
    return time.perf_counter() - t0, n, time.process_time() - c0


def naive_trial_s(hp, epochs: int) -> float:
    from polarity.data.xor import trial_data
    from polarity.experiments.xor5d import epoch_permutations, initial_state, parse_condition, train_single
    from polarity.models.mlp import XORNet
    from polarity.seeds import trial_seed

    seed = trial_seed(hp.seed, 0)
    data = trial_data(seed, max(hp.sample_sizes), hp.val_size)
    xv, yv = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
    times = []
    for n in hp.sample_sizes:
        x, y = (torch.from_numpy(a) for a in data.train(n))
        perms = epoch_permutations(seed, len(y), epochs)
        for cname in hp.conditions:
            cond = parse_condition(cname, hp.reset)
            p, tm = initial_state(seed, hp.widths[0], cond)
            net = XORNet(hp.widths[0])
            net.load_state_dict({k: torch.from_numpy(v) for k, v in p.items()})
            t0 = time.perf_counter()
            train_single(net, x, y, perms, {k: torch.from_numpy(v) for k, v in tm.items()}, cond.reset,
                         lr=hp.lr, batch_size=hp.batch_size, eps=hp.adam_eps, x_val=xv, y_val=yv,
                         reset_seed=0)
            times.append((time.perf_counter() - t0) * hp.epochs / epochs)
    return float(np.mean(times))


def fig4_run(workers: int) -> dict:
    """``polarity run xor5d --preset fig4 --workers N`` into a temporary directory, store included."""
    import tempfile

    from polarity import engine

    spec = engine.resolve(engine.get_experiment("xor5d"), "fig4")
    with tempfile.TemporaryDirectory(prefix="polarity-bench-fig4-") as tmp:
        t0 = time.perf_counter()
        s = engine.run_spec(spec, tmp, workers=workers, quiet=True)
        wall = time.perf_counter() - t0
        db = os.path.getsize(os.path.join(tmp, "results.sqlite"))
    assert s.complete, s.failures[:3]
    return {"fig4_run_workers": workers, "fig4_run_s": round(wall, 3), "fig4_run_trials": s.computed_trials,
            "fig4_run_commit_s": round(s.commit_s, 3), "fig4_run_commit_fraction": round(s.commit_s / wall, 4),
            "fig4_run_db_mb": round(db / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-fig4", action="store_true")
    ap.add_argument("--fig4-n500", action="store_true",
                    help="also time the fig4-n500 preset (the n = 500 slice of fig4), as fig4_n500_s")
    ap.add_argument("--naive-epochs", type=int, default=3)
    ap.add_argument("--fig4-run", action="store_true",
                    help="also time `polarity run xor5d --preset fig4 --workers N`, the store included")
    ap.add_argument("--run-workers", type=int, default=2, help="N for --fig4-run (default 2)")
    ap.add_argument("--only-fig4-run", action="store_true", help="time --fig4-run only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.only_fig4_run:
        steal0 = steal_s()
        out = {"cpus": os.cpu_count(), "load_avg_1m_before": round(os.getloadavg()[0], 2),
               **fig4_run(args.run_workers)}
        out["load_avg_1m"] = round(os.getloadavg()[0], 2)
        out["steal_s"] = round(steal_s() - steal0, 2)
        print(json.dumps(out))
        return
    from polarity.experiments import get

    exp = get("xor5d")
    fig1 = exp.presets["fig1"]
    warm = dataclasses.replace(fig1, trials=1, epochs=1, sample_sizes=(8, 40))
    for j in exp.jobs(warm):  # compile / load the kernels
        exp.run_job(warm, j)
    steal0 = steal_s()
    out: dict = {"device": "cpu", "threads": 1, "cpu": platform.processor() or platform.machine()}
    fig1_s, nets, fig1_cpu = run_preset(exp, fig1)
    out.update(fig1_s=round(fig1_s, 3), fig1_cpu_s=round(fig1_cpu, 3), fig1_networks=nets)
    naive = naive_trial_s(fig1, args.naive_epochs)
    batched = fig1_s / nets
    out.update(naive_trial_s=round(naive, 4), naive_scaled_from_epochs=args.naive_epochs,
               batched_trial_s=round(batched, 6), speedup=round(naive / batched, 1))
    if not args.skip_fig4:
        fig4_s, n4, fig4_cpu = run_preset(exp, exp.presets["fig4"])
        out.update(fig4_s=round(fig4_s, 3), fig4_cpu_s=round(fig4_cpu, 3), fig4_networks=n4)
    if args.fig4_n500:
        fa_s, na, fa_cpu = run_preset(exp, exp.presets["fig4-n500"])
        out.update(fig4_n500_s=round(fa_s, 3), fig4_n500_cpu_s=round(fa_cpu, 3), fig4_n500_networks=na)
    if args.fig4_run:
        out.update(fig4_run(args.run_workers))
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    out["steal_s"] = round(steal_s() - steal0, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
