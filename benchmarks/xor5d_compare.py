"""Figure 1's training under two or more versions of the code, interleaved in one run (issue 20).

    .venv/bin/python benchmarks/xor5d_compare.py [--variant NAME=REV ...] [--reps 7] [--trials 50]

Each ``--variant NAME=REV`` is a git revision whose ``src/`` is extracted (``git archive``) to
``/tmp/polarity-bench-src-<sha>`` (kept: numba's cache lives there), or ``.`` for this checkout's
working tree.  Default: ``fastmath=17603d2^`` (the last kernels compiled with ``fastmath=True``)
and ``tree=.``.  One worker process per variant imports its own ``polarity``, compiles (or loads)
the kernels and runs a warm-up job; then the driver asks the workers in turn (A B C, C B A, A B C,
...: the order flips every round so a drift in the machine's load hits every variant alike) to
train every job of the ``fig1`` preset (11 sample sizes x ``--trials`` trials x 3 conditions,
H = 64, 100 epochs, validation every epoch) through ``Experiment.run_job`` and encode every trial
for the store (``store.pack_trial``), i.e. what a worker of ``polarity run`` does: data
generation, initialisation, training, the result records and their encoding, without the
database.  One thread each (torch, numba, OpenMP).

Prints ONE JSON line: per variant the median wall and CPU seconds (``process_time``, less
disturbed by other processes than the wall time) of the whole, the median CPU seconds of
``run_job`` alone and of the encoding, every round's wall time, a SHA-256 of the per-epoch
records of every trial and one of their encoding for the store (two variants that compute the
same bits have the same digests); ``ratio_*``: each variant's median over the first variant's,
wall and CPU (whole, and ``run_job`` alone).  The machine
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
    from polarity.store import pack_trial

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
        t1, c1 = time.perf_counter(), time.process_time()
        packed = [pack_trial(r) for r in results]
        t2, c2 = time.perf_counter(), time.process_time()
        h, hp_ = hashlib.sha256(), hashlib.sha256()
        for r in sorted(results, key=lambda r: repr(r.key)):
            h.update(repr(r.key).encode())
            for rec in r.epochs:
                row = [rec.train_loss, rec.train_acc, rec.val_loss, rec.val_acc,
                       *(v for _, v in sorted(rec.extra.items()))]
                h.update(np.array(row, dtype=np.float64).tobytes())
        for p in sorted(packed, key=lambda p: repr(p.key)):
            hp_.update(repr(p.key).encode() + b"".join(p.series) + (p.extra or b""))
        print(json.dumps({"wall_s": t2 - t0, "cpu_s": c2 - c0, "run_job_wall_s": t1 - t0, "run_job_cpu_s": c1 - c0,
                          "pack_cpu_s": c2 - c1, "trials": len(results), "sha256": h.hexdigest(),
                          "packed_sha256": hp_.hexdigest()}), flush=True)


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


def _digest(values) -> str | list[str]:
    """The first 16 hex digits of one digest, or of each if the rounds disagree."""
    d = sorted(set(values))
    return d[0][:16] if len(d) == 1 else [x[:16] for x in d]


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
                print(f"round {rnd + 1}/{args.reps} {w.name}: {r['wall_s']:.3f} s wall, {r['cpu_s']:.3f} s CPU "
                      f"({r['pack_cpu_s']:.3f} s packing)", file=sys.stderr, flush=True)
    finally:
        for w in workers:
            w.close()
    out: dict = {"benchmark": "xor5d_compare", "trials": args.trials, "reps": args.reps,
                 "networks": workers[0].runs[0]["trials"], "threads": 1,
                 "interleaved": "A B .. / .. B A rounds; shared VM: compare medians, not single runs"}
    base = None
    for w in workers:
        med = {k: statistics.median(r[k] for r in w.runs) for k in ("wall_s", "cpu_s", "run_job_cpu_s", "pack_cpu_s")}
        out[w.name] = {"rev": w.rev, **{k: round(v, 3) for k, v in med.items()},
                       "wall_min_s": round(min(r["wall_s"] for r in w.runs), 3),
                       "walls": [round(r["wall_s"], 3) for r in w.runs],
                       **{k: _digest(r[k] for r in w.runs) for k in ("sha256", "packed_sha256")}}
        if base is None:
            base = (w.name, med)
        else:
            out[f"ratio_{w.name}_over_{base[0]}"] = {
                "wall": round(med["wall_s"] / base[1]["wall_s"], 3), "cpu": round(med["cpu_s"] / base[1]["cpu_s"], 3),
                "run_job_cpu": round(med["run_job_cpu_s"] / base[1]["run_job_cpu_s"], 3)}
    out["load_avg_1m_before"] = round(load0, 2)
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    out["steal_s"] = round(steal_s() - steal0, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
