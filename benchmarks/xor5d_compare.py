"""Figure 1's training under two or more versions of the code, interleaved in one run (issue 20).

    .venv/bin/python benchmarks/xor5d_compare.py [--variant NAME=REV ...] [--reps 7] [--trials 50]

Each ``--variant NAME=REV`` is a git revision whose ``src/`` is extracted (``git archive``) to
``/tmp/polarity-bench-src-<sha>`` (kept: numba's cache lives there), or ``.`` for this checkout's
working tree.  Default: ``fastmath=17603d2^`` (the last kernels compiled with ``fastmath=True``)
and ``tree=.``.  One worker process per variant imports its own ``polarity``, compiles (or loads)
the kernels and runs a warm-up job; then the driver asks the workers in turn (A B C, C B A, A B C,
...: the order flips every round so a drift in the machine's load hits every variant alike) to
train every job of the ``fig1`` preset (11 sample sizes x ``--trials`` trials x 3 conditions,
H = 64, 100 epochs, validation every epoch) through ``Experiment.run_job``, i.e. with data
generation, initialisation and the result records, without the store.  One thread each
(torch, numba, OpenMP).

Prints ONE JSON line: per variant the median wall and CPU seconds (``process_time``, less
disturbed by other processes than the wall time), every round's wall time, and a SHA-256 of the
per-epoch records of every trial (two variants whose kernels compute the same bits have the same
digest); ``ratio_*``: each variant's median over the first variant's, wall and CPU.  The machine
this was written on is a shared 2-core VM with studies running, so single timings are noise: read
the medians of interleaved rounds, and the load average and hypervisor steal reported with them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- worker
def worker(trials: int) -> None:
    """Serve 'run' lines on stdin: train fig1 once, answer one JSON line."""
    import dataclasses

    import numpy as np
    import torch

    import polarity
    from polarity.experiments import get

    torch.set_num_threads(1)
    exp = get("xor5d")
    hp = dataclasses.replace(exp.presets["fig1"], trials=trials)
    warm = dataclasses.replace(hp, trials=1, epochs=2)  # every job shape of fig1: every specialisation
    for j in exp.jobs(warm):  # compile / load the kernels
        exp.run_job(warm, j)
    jobs = exp.jobs(hp)
    print(json.dumps({"ready": os.path.dirname(polarity.__file__)}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        results = [r for job in jobs for r in exp.run_job(hp, job)]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        h = hashlib.sha256()
        for r in sorted(results, key=lambda r: repr(r.key)):
            h.update(repr(r.key).encode())
            for rec in r.epochs:
                row = [rec.train_loss, rec.train_acc, rec.val_loss, rec.val_acc,
                       *(v for _, v in sorted(rec.extra.items()))]
                h.update(np.array(row, dtype=np.float64).tobytes())
        print(json.dumps({"wall_s": wall, "cpu_s": cpu, "trials": len(results),
                          "sha256": h.hexdigest()}), flush=True)


# ----------------------------------------------------------------------------- driver
def source_dir(rev: str) -> str:
    """``src/`` of git revision ``rev`` (extracted once), or this checkout's for '.'."""
    if rev == ".":
        return os.path.join(ROOT, "src")
    sha = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    dest = os.path.join(tempfile.gettempdir(), f"polarity-bench-src-{sha[:12]}")
    if not os.path.isdir(os.path.join(dest, "src", "polarity")):
        os.makedirs(dest, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "src"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return os.path.join(dest, "src")


def steal_s() -> float:
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class Worker:
    def __init__(self, name: str, rev: str, trials: int):
        src = source_dir(rev)
        env = dict(os.environ, PYTHONPATH=src, **THREAD_ENV)
        self.name, self.rev = name, rev
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--trials", str(trials)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=src)
        ready = json.loads(self._line())
        if os.path.realpath(ready["ready"]) != os.path.realpath(os.path.join(src, "polarity")):
            raise SystemExit(f"xor5d_compare: variant {name} imported polarity from {ready['ready']}, not {src}")
        self.runs: list[dict] = []

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"xor5d_compare: the worker of variant {self.name} died")
        return line

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        r = json.loads(self._line())
        self.runs.append(r)
        return r

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", action="append", metavar="NAME=REV",
                    help="a git revision (or '.' for the working tree) to time; repeatable")
    ap.add_argument("--reps", type=int, default=7, help="interleaved rounds (default 7)")
    ap.add_argument("--trials", type=int, default=50, help="fig1 trials per (n, condition) (default 50)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.trials)
        return
    variants = []
    for v in args.variant or ["fastmath=17603d2^", "tree=."]:
        name, sep, rev = v.partition("=")
        if not sep or not name or not rev:
            ap.error(f"--variant wants NAME=REV, got {v!r}")
        variants.append((name, rev))
    workers = [Worker(n, r, args.trials) for n, r in variants]
    load0, steal0 = os.getloadavg()[0], steal_s()
    try:
        for rnd in range(args.reps):
            for w in (workers if rnd % 2 == 0 else workers[::-1]):
                r = w.run()
                print(f"round {rnd + 1}/{args.reps} {w.name}: {r['wall_s']:.3f} s wall, {r['cpu_s']:.3f} s CPU",
                      file=sys.stderr, flush=True)
    finally:
        for w in workers:
            w.close()
    out: dict = {"benchmark": "xor5d_compare", "trials": args.trials, "reps": args.reps,
                 "networks": workers[0].runs[0]["trials"], "threads": 1,
                 "interleaved": "A B .. / .. B A rounds; shared VM: compare medians, not single runs"}
    base = None
    for w in workers:
        wall = statistics.median(r["wall_s"] for r in w.runs)
        cpu = statistics.median(r["cpu_s"] for r in w.runs)
        digests = sorted({r["sha256"] for r in w.runs})
        out[w.name] = {"rev": w.rev, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                       "wall_min_s": round(min(r["wall_s"] for r in w.runs), 3),
                       "walls": [round(r["wall_s"], 3) for r in w.runs],
                       "sha256": digests[0][:16] if len(digests) == 1 else [d[:16] for d in digests]}
        if base is None:
            base = (w.name, wall, cpu)
        else:
            out[f"ratio_{w.name}_over_{base[0]}"] = {"wall": round(wall / base[1], 3), "cpu": round(cpu / base[2], 3)}
    out["load_avg_1m_before"] = round(load0, 2)
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    out["steal_s"] = round(steal_s() - steal0, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
