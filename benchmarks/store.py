"""Benchmark of the results store's commit (issue 14).  Prints ONE JSON line.

The same synthetic trials (shaped like a ``fig4`` job's: ``--epochs`` epochs each, the four
metrics and two float extras per epoch, as the XOR-5D trainer records them) are committed job
by job, each job in one transaction, into a fresh database:

* ``rows_rows_per_s``: schema 1, one SQLite row per (trial, epoch), extras as JSON text; the
  commit as polarity 0.1 wrote it (``commit_rows`` below is that code, kept as the baseline);
* ``columnar_rows_per_s``: the current schema (``polarity.store``; 2 in issue 14, 3 with its
  per-trial digest since issue 21), one row per trial holding its series,
  committing trials a worker has packed already (``pack_trial`` runs in the worker, so this is
  the driver's whole share, the number the driver's throughput depends on);
* ``columnar_with_pack_rows_per_s``: schema 2 with the packing done in the timed commit as well
  (``commit_job`` given ``TrialResult``s), i.e. the work of worker and driver together;
* ``pack_rows_per_s``: the packing alone.

Throughputs are epoch rows per second.  ``speedup`` = columnar / rows (goal >= 20).  Each number
is the best of ``--repeat`` runs (the machine may be shared).  ``read_*_s``: ``epochs_frame()``
of each database (schema 3's includes checking every trial's digest; ``verify_columnar_s``: that
check alone).  Usage: ``python benchmarks/store.py [--trials N] [--epochs E] [--job-trials J]``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from polarity.experiments.base import EpochRecord, TrialKey, TrialResult
from polarity.store import _DDL_V1, SCHEMA_VERSION, Store, pack_trial


def synthetic_jobs(trials: int, epochs: int, job_trials: int) -> list[list[TrialResult]]:
    """Float32-valued metrics and switch fractions, as the XOR-5D trainer produces them.  Every
    job has its own trial keys; the epoch records of one job are shared by all (the commit's work
    is the same, the memory is not that of millions of records)."""
    rng = np.random.default_rng(0)
    series = []
    for _ in range(job_trials):
        m = rng.random((epochs, 6), dtype=np.float32).astype(np.float64).tolist()
        series.append([EpochRecord(e + 1, r[0], r[1], r[2], r[3],
                                   {"switch/fc1.weight": r[4], "switch/fc2.weight": r[5]})
                       for e, r in enumerate(m)])
    jobs, t = [], 0
    while t < trials:
        job = []
        for i in range(min(job_trials, trials - t)):
            job.append(TrialResult(TrialKey("frozen-rand", 8 + t % 11, 2 + t % 30, t), seed=t, wall_s=0.01,
                                   epochs=series[i]))
            t += 1
        jobs.append(job)
    return jobs


# ----------------------------------------------------------------------------- schema 1, as it was

def _scalar_json(v) -> str:
    if hasattr(v, "item"):
        v = v.item()
    if type(v) is float:
        if v != v:
            return "null"
        if v in (math.inf, -math.inf):
            return "1e999" if v > 0 else "-1e999"
        return repr(v)
    if type(v) is int:
        return str(v)
    return json.dumps(v, sort_keys=True)


_KEYS: dict[str, str] = {}


def _extra_json(extra) -> str | None:
    if not extra:
        return None
    parts = []
    for k in sorted(extra):
        kj = _KEYS.get(k)
        if kj is None:
            kj = _KEYS.setdefault(k, json.dumps(str(k)))
        parts.append(f"{kj}:{_scalar_json(extra[k])}")
    return "{" + ",".join(parts) + "}"


def _f(x):
    if type(x) is float:
        return x
    return None if x is None or math.isnan(float(x)) else float(x)


def open_rows(path: Path) -> sqlite3.Connection:
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("PRAGMA foreign_keys=ON")
    c.executescript(_DDL_V1)
    c.execute("PRAGMA user_version = 1")
    return c


def commit_rows(c: sqlite3.Connection, experiment: str, job_key: str, results, hw: str, hpj: str) -> int:
    """Schema 1's commit_job: one trials row and one epochs row per epoch, one transaction."""
    finished = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    c.execute("BEGIN IMMEDIATE")
    inserted = 0
    for r in results:
        k = r.key
        cur = c.execute(
            "INSERT INTO trials(experiment, condition, n, width, trial, seed, status, wall_s,"
            " hardware, version, hparams, extra, job, finished_at)"
            " VALUES (?,?,?,?,?,?,'complete',?,?,?,?,?,?,?)"
            " ON CONFLICT(experiment, condition, n, width, trial) DO NOTHING",
            (experiment, k.condition, int(k.n), int(k.width), int(k.trial), int(r.seed),
             float(r.wall_s), hw, "0.1", hpj, json.dumps(r.extra or {}, sort_keys=True), job_key, finished))
        if cur.rowcount == 0:
            continue
        tid = cur.lastrowid
        c.executemany(
            "INSERT INTO epochs(trial_id, epoch, train_loss, train_acc, val_loss, val_acc, extra)"
            " VALUES (?,?,?,?,?,?,?)",
            [(tid, int(e.epoch), _f(e.train_loss), _f(e.train_acc), _f(e.val_loss),
              _f(e.val_acc), _extra_json(e.extra)) for e in r.epochs])
        inserted += 1
    c.execute("COMMIT")
    return inserted


# ----------------------------------------------------------------------------- timing

HW = {"host": "bench", "cpu": "x", "threads": 1, "device": "cpu"}
HPARAMS = {"widths": list(range(2, 30)), "sample_sizes": [8, 16, 24, 32, 40, 60, 80, 100, 200, 300, 500],
           "epochs": 100, "trials": 50, "lr": 0.01, "conditions": ["fluid-rand", "frozen-rand", "frozen-sufficient"]}


def time_rows(jobs, d: Path) -> float:
    c = open_rows(d / "rows.sqlite")
    hw, hpj = json.dumps(HW, sort_keys=True), json.dumps(HPARAMS, sort_keys=True)
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        commit_rows(c, "xor5d", f"j{i}", job, hw, hpj)
    t = time.perf_counter() - t0
    c.close()
    return t


def time_columnar(jobs, d: Path, name: str) -> float:
    with Store(d / name) as s:
        t0 = time.perf_counter()
        for i, job in enumerate(jobs):
            s.commit_job("xor5d", f"j{i}", job, hardware=HW, version="0.1", hparams=HPARAMS)
        return time.perf_counter() - t0


def time_read(path: Path) -> float:
    with Store(path, readonly=True) as s:
        t0 = time.perf_counter()
        s.epochs_frame()
        return time.perf_counter() - t0


def time_verify(path: Path) -> float:
    """Schema 3's check of every trial (digests, counts) alone: part of ``time_read``."""
    with Store(path, readonly=True) as s:
        t0 = time.perf_counter()
        s.verify()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--job-trials", type=int, default=150, help="trials per job (one transaction each)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    jobs = synthetic_jobs(args.trials, args.epochs, args.job_trials)
    rows = args.trials * args.epochs
    best = {"rows": math.inf, "columnar": math.inf, "with_pack": math.inf, "pack": math.inf}
    reads = {}
    load0 = os.getloadavg()[0]
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="polarity-bench-store-") as tmp:
            d = Path(tmp)
            best["rows"] = min(best["rows"], time_rows(jobs, d))
            t0 = time.perf_counter()
            packed = [[pack_trial(r) for r in job] for job in jobs]  # the workers' share
            best["pack"] = min(best["pack"], time.perf_counter() - t0)
            best["columnar"] = min(best["columnar"], time_columnar(packed, d, "columnar.sqlite"))
            best["with_pack"] = min(best["with_pack"], time_columnar(jobs, d, "with_pack.sqlite"))
            reads = {"read_rows_s": round(time_read(d / "rows.sqlite"), 3),
                     "read_columnar_s": round(time_read(d / "columnar.sqlite"), 3),
                     "verify_columnar_s": round(time_verify(d / "columnar.sqlite"), 3),
                     "bytes_rows": (d / "rows.sqlite").stat().st_size,
                     "bytes_columnar": (d / "columnar.sqlite").stat().st_size}
    out = {"schema": SCHEMA_VERSION, "trials": args.trials, "epochs": args.epochs, "jobs": len(jobs),
           "epoch_rows": rows, **{f"{k}_s": round(v, 3) for k, v in best.items()},
           "rows_rows_per_s": round(rows / best["rows"]),
           "columnar_rows_per_s": round(rows / best["columnar"]),
           "columnar_with_pack_rows_per_s": round(rows / best["with_pack"]),
           "pack_rows_per_s": round(rows / best["pack"]),
           "speedup": round(best["rows"] / best["columnar"], 1),
           "speedup_with_pack": round(best["rows"] / best["with_pack"], 1),
           **reads, "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
