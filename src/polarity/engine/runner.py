"""Running a spec into a run directory: checks, lock, resume, executors, commits, progress.

A run directory holds ``spec.json`` (experiment, preset, hparams, hash), ``results.sqlite`` (see
``polarity.store``), ``run.lock`` and ``report/`` (``rundir``: the files and the rules for
touching them).  ``run_spec`` is idempotent: it computes only the jobs whose trials are not all
complete, so rerunning the same command after an interruption (even SIGKILL) completes the run
with every trial exactly once and the numbers of an uninterrupted run; a requested grid that
holds the stored one grows the run (``growth``).

One writer at a time: a run holds an exclusive ``flock`` on ``run.lock`` from before it writes
``spec.json`` until it ends; the kernel releases it however the process ends (SIGKILL included).
A second ``polarity run`` on the same directory is refused with the holder's pid, host and
command.  Every check that can refuse a directory (another spec, not a run directory, a newer or
foreign database, a read-only directory or database) runs before anything is written or computed
and leaves the directory as it was.  Readers (``report``, ``export``) never take the lock; they
check that ``spec.json`` and the database's own record of its spec agree (``open_run``).

Before dispatching the pending jobs the driver runs the experiment's preparation
(``Experiment.prepare``: e.g. pretraining a transfer source once, with the jobs' thread count)
and hands the directories it prepared to the executor.  ``RunSummary`` says how long the
preparation and the commits took (``prepare_s``, ``commit_s``).
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import experiments
from ..experiments.base import MAX_GRID_TRIALS, Experiment, ExperimentError, Job, TrialKey, hparams_dict
from ..store import FILENAME, Grid, Store, StoreError, repair, upgrade
from .executors import Outcome, check_device, make_executor, probe_ray, set_threads
from .growth import check_agrees, check_change, check_intact, follow_spec, upgrade_spec, write_spec
from .progress import DEFAULT_EVERY_S, Progress
from .rundir import (ERRORS_FILE, LOCK_FILE, SPEC_FILE, RunDirError, RunLock, check_path, check_writable,
                     polarity_version, read_spec_file, refuse_links)
from .spec import SPEC_FORMAT, GridChange, Spec, current_hparams, hparams_from_dict, spec_format



@dataclass
class JobFailure:
    job: str
    error: str
    traceback: str = ""


@dataclass
class RunSummary:
    out: Path
    total_trials: int
    skipped_trials: int  # already complete before this invocation
    computed_trials: int
    failures: list[JobFailure] = field(default_factory=list)
    elapsed_s: float = 0.0
    pending_jobs: int = 0
    prepare_s: float = 0.0  # the experiment's preparation in the driver (pretraining a source)
    commit_s: float = 0.0  # the driver's time in store.commit_job

    @property
    def complete(self) -> bool:
        return not self.failures and self.skipped_trials + self.computed_trials == self.total_trials


# ----------------------------------------------------------------------------- run directories


def load_spec(out: str | Path) -> tuple[Experiment, Spec, dict[str, Any]]:
    """The experiment and spec stored in a run directory (for report/export)."""
    out = Path(out)
    check_path(out)
    if not out.is_dir():
        raise RunDirError(f"{out} is not a directory")
    data = read_spec_file(out)
    if data is None:
        raise RunDirError(f"{out} is not a polarity run directory (no {SPEC_FILE})")
    exp = experiments.get(data["experiment"])
    hp = hparams_from_dict(exp.Hparams, current_hparams(exp, data["hparams"], spec_format(data)), strict=False)
    return exp, Spec(exp.name, data.get("preset", "?"), hp), data


def grid_of(exp: Experiment, spec: Spec) -> Grid | None:
    """The trials ``spec`` has, for the store to refuse rows outside them (None for a grid too
    large to list, which ``exp.validate`` refuses before a run starts)."""
    try:
        if exp.grid_size(spec.hp) > MAX_GRID_TRIALS:
            return None
        return Grid(spec.experiment, exp.trials(spec.hp))
    except (ValueError, TypeError):  # a hand-edited spec.json whose grid cannot be built
        return None


def open_run(out: str | Path) -> tuple[Experiment, Spec, Store]:
    """A reader's view of a run directory: its experiment, its spec and its store, open read-only,
    after checking that they agree; the store refuses rows outside the spec's grid.  Takes no
    lock; the caller closes the store."""
    out = Path(out)
    exp, spec, data = load_spec(out)
    try:
        store = Store(out / FILENAME, readonly=True)
    except StoreError as e:
        raise RunDirError(str(e)) from None
    try:
        check_agrees(out, data, store.meta(), spec)
        store.expect(grid_of(exp, spec))
    except BaseException:
        store.close()
        raise
    return exp, spec, store


def check_run_dir(out: Path, spec: Spec) -> GridChange | None:
    """Refuse a directory that holds another spec or something that is not a run.  Returns None
    for a new or empty directory, else how its spec relates to ``spec``: the same, or ``grow``
    (its grid is part of ``spec``'s: the run is extended); anything else is refused, with what to
    do (``growth.check_change``).  Touches nothing."""
    check_path(out, "--out")
    if not out.exists():
        return None
    if not out.is_dir():
        raise RunDirError(f"--out {out} exists and is not a directory")
    stored = read_spec_file(out)
    if stored is None:
        try:
            entries = [p.name for p in out.iterdir() if p.name != LOCK_FILE]
        except OSError as e:
            raise RunDirError(f"cannot read {out}: {e.strerror or e}") from None
        if entries:
            raise RunDirError(
                f"--out {out} is not empty and is not a polarity run directory (no {SPEC_FILE}); "
                "choose a new or empty directory")
        return None
    return check_change(out, stored, spec)


def prepare_run_dir(out: Path, spec: Spec, command: Sequence[str] | None = None) -> tuple[RunLock, Store]:
    """Check, lock, create and open a run directory for ``spec``; returns the held lock and the
    store (the caller closes the store, then releases the lock).  A refusal changes nothing."""
    check_run_dir(out, spec)
    check_writable(out)
    db = out / FILENAME
    if db.exists():
        with Store(db, readonly=True) as s:  # a newer, older or foreign schema is refused before any write
            s.check_current()
            data = read_spec_file(out)
            if data is not None:  # and a damaged or edited record of the spec, in either file
                check_intact(out, data, s.meta())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot write run directory {out}: {e.strerror or e}") from None
    lock = RunLock(out)
    lock.acquire(command)
    store = None
    try:
        change = check_run_dir(out, spec)  # again, as the lock holder: another writer may have come first
        refuse_links(out, out / ERRORS_FILE)  # a failed job appends to it: never through a link
        if change is None or change.kind == "grow":
            try:
                store = Store(db) if change is not None else None  # a grown run: its store must open first
                if store is not None:
                    store.check_writable()
                write_spec(out, spec, command, read_spec_file(out) if change is not None else None)
            except OSError as e:
                raise RunDirError(f"cannot write run directory {out}: {e.strerror or e}") from None
            except StoreError as e:
                raise RunDirError(str(e)) from None
        try:
            store = store or Store(db)
            store.check_writable()
        except StoreError as e:
            raise RunDirError(str(e)) from None
        meta = store.meta()
        if meta.get("spec_hash") not in (None, spec.hash):
            follow_spec(store, meta, spec)  # spec.json (written first) grew the run, now or earlier
        if not meta:
            try:
                store.set_meta({"spec_hash": spec.hash, "experiment": spec.experiment, "preset": spec.preset,
                                "format": SPEC_FORMAT, "hparams": spec.hparams,
                                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "polarity_version": polarity_version(), "elapsed_s": 0.0})
            except StoreError as e:
                raise RunDirError(str(e)) from None
    except BaseException:
        if store is not None:
            store.close()
        lock.release()
        raise
    return lock, store


def repair_run(out: str | Path, command: Sequence[str] | None = None) -> dict[str, Any]:
    """``polarity store repair DIR``: the trials of the run's store that fail its checks (see
    ``store.repair``) removed under the run's lock, so that rerunning the run's command
    recomputes them."""
    out = Path(out)
    exp, spec, store = open_run(out)
    store.close()
    check_writable(out)
    lock = RunLock(out)
    lock.acquire(command)
    try:
        return repair(out / FILENAME, grid_of(exp, spec))
    except StoreError as e:
        raise RunDirError(str(e)) from None
    finally:
        lock.release()


def upgrade_run(out: str | Path, command: Sequence[str] | None = None) -> dict[str, Any]:
    """``polarity store upgrade DIR``: the run's store converted to the current schema in place
    (``store.upgrade``), after checking that ``spec.json`` describes it, under the run's lock (so
    never while a run writes to it); a spec of an older format is rewritten in the current one
    (``spec.json``, then the database's record; the trials are not touched), its old hash and
    command kept in ``spec.json``'s ``upgraded_from``.  The result's ``spec``: ``[from, to]``
    formats, or None when the spec was current."""
    out = Path(out)
    _, spec, store = open_run(out)  # a newer or foreign database, or another spec: refused untouched
    store.close()
    check_writable(out)
    lock = RunLock(out)
    lock.acquire(command)
    try:
        done = upgrade(out / FILENAME)
        done["spec"] = upgrade_spec(out, spec, read_spec_file(out) or {})
        return done
    except StoreError as e:
        raise RunDirError(str(e)) from None
    except OSError as e:
        raise RunDirError(f"cannot write run directory {out}: {e.strerror or e}") from None
    finally:
        lock.release()


# ----------------------------------------------------------------------------- jobs

def plan(exp: Experiment, hp: Any) -> tuple[list[TrialKey], list[Job]]:
    """The grid and its jobs, checked: every trial in exactly one job."""
    trials = list(exp.trials(hp))
    jobs = list(exp.jobs(hp))
    seen: dict[TrialKey, str] = {}
    for j in jobs:
        for t in j.trials:
            if t in seen:
                raise ExperimentError(f"experiment {exp.name!r}: trial {t} is in jobs {seen[t]!r} and {j.key!r}")
            seen[t] = j.key
    if len(set(trials)) != len(trials):
        raise ExperimentError(f"experiment {exp.name!r}: trials(hp) has duplicates")
    if set(seen) != set(trials):
        missing = sorted(set(trials) - set(seen))[:3]
        extra = sorted(set(seen) - set(trials))[:3]
        raise ExperimentError(f"experiment {exp.name!r}: jobs do not cover the trials "
                              f"(missing e.g. {missing}, extra e.g. {extra})")
    if len({j.key for j in jobs}) != len(jobs):
        raise ExperimentError(f"experiment {exp.name!r}: duplicate job keys")
    return trials, jobs


def pending_jobs(jobs: Sequence[Job], done: set[TrialKey]) -> list[Job]:
    """The jobs with trials not yet done, each cut down to those trials (a job is committed
    whole, so only a grown run has jobs partly done; a trial's numbers do not depend on its job)."""
    out = []
    for j in jobs:
        todo = tuple(t for t in j.trials if t not in done)
        if todo:
            out.append(j if len(todo) == len(j.trials) else Job(j.key, todo))
    return out


def _check_results(job: Job, outcome: Outcome) -> str | None:
    got = [r.key for r in outcome.results or []]
    if sorted(got) != sorted(job.trials):
        missing = sorted(set(job.trials) - set(got))[:3]
        extra = sorted(set(got) - set(job.trials))[:3]
        return (f"ExperimentError: job returned the wrong trials (missing e.g. {missing}, "
                f"unexpected e.g. {extra}, {len(got)} results for {len(job.trials)} trials)")
    return None


# ----------------------------------------------------------------------------- running

def run_spec(spec: Spec, out: str | Path, *, executor: str = "local", workers: int = 1,
             address: str | None = None, device: str = "cpu", quiet: bool = False,
             progress_every: float = DEFAULT_EVERY_S, retries: int = 3,
             command: Sequence[str] | None = None) -> RunSummary:
    """Compute every trial of ``spec`` that ``out`` does not hold yet: the experiment's
    preparation in this process (``Experiment.prepare``), then the pending jobs on the executor,
    each finished job committed by this process in one transaction."""
    exp = experiments.get(spec.experiment)
    exp.validate(spec.hp)
    check_device(device, executor)
    if not progress_every > 0:
        raise ExperimentError(f"--progress-every must be > 0 seconds, got {progress_every}")
    if retries < 0:
        raise ExperimentError(f"--retries must be >= 0, got {retries}")
    if executor == "ray":
        probe_ray(address)  # before anything is locked, written or prepared
    out = Path(out)
    trials, jobs = plan(exp, spec.hp)
    lock, store = prepare_run_dir(out, spec, command)
    t_start = time.perf_counter()
    summary = RunSummary(out, len(trials), 0, 0)
    try:
        store.expect(Grid(spec.experiment, trials))
        done = store.completed(spec.experiment) & set(trials)
        summary.skipped_trials = len(done)
        todo = pending_jobs(jobs, done)
        summary.pending_jobs = len(todo)
        if not todo:
            return summary
        hparams = hparams_dict(spec.hp)
        version = polarity_version()
        desc = f"{spec.experiment}/{spec.preset}"
        with Progress(len(trials), len(done), desc=desc, quiet=quiet, every=progress_every) as bar:
            t0 = time.perf_counter()
            prepared = _prepare(exp, spec.hp, device, bar.log)
            summary.prepare_s = time.perf_counter() - t0
            with make_executor(executor, workers, address, retries, quiet=quiet) as ex:
                ex.ship(prepared)
                for outcome in ex.run(spec.experiment, spec.hp, todo, device):
                    job = outcome.job
                    if outcome.ok:
                        bad = _check_results(job, outcome)
                        if bad:
                            outcome.error, outcome.traceback = bad, ""
                    if not outcome.ok:
                        summary.failures.append(JobFailure(job.key, outcome.error or "?", outcome.traceback or ""))
                        bar.write(f"job {job.key} failed: {outcome.error}")
                        continue
                    if outcome.results and not any(r.wall_s for r in outcome.results):
                        for r in outcome.results:  # the experiment did not time its trials: share the job's time
                            r.wall_s = outcome.wall_s / len(outcome.results)
                    n_new = sum(1 for r in outcome.results if r.key not in done)
                    t0 = time.perf_counter()
                    try:
                        store.commit_job(spec.experiment, job.key, outcome.results, hardware=outcome.hardware,
                                         version=version, hparams=hparams)
                    except StoreError as e:
                        fix = ("make it and its directory writable, then rerun to resume" if e.readonly
                               else "rerun to resume (once there is room, if the disk is full)")
                        raise RunDirError(f"{e}; the {summary.computed_trials + summary.skipped_trials} trials "
                                          f"committed so far are kept; {fix}") from None
                    summary.commit_s += time.perf_counter() - t0
                    done.update(r.key for r in outcome.results)
                    summary.computed_trials += n_new
                    bar.update(n_new)
        return summary
    finally:
        summary.elapsed_s = time.perf_counter() - t_start
        try:
            if summary.computed_trials:
                meta = store.meta()
                store.set_meta({"elapsed_s": float(meta.get("elapsed_s") or 0.0) + summary.elapsed_s})
        except (StoreError, sqlite3.Error, TypeError, ValueError):
            pass
        store.close()
        lock.release()
        if summary.failures:
            _write_errors(out, summary.failures)


def _prepare(exp: Experiment, hp: Any, device: str, log) -> list[Path]:
    """``exp.prepare`` in the driver, with the jobs' torch thread count (so what it computes is
    what a worker would compute), on ``device`` when this machine has it, else on the CPU."""
    import torch

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        device = "cpu"  # Ray workers have the GPUs, the driver does not
    saved = torch.get_num_threads()
    set_threads(hp)
    try:
        return [Path(d) for d in exp.prepare(hp, device=device, log=log) or ()]
    except (ValueError, OSError) as e:  # ExperimentError, TransferError, a missing dataset, ...
        raise ExperimentError(f"preparing {exp.name} before its jobs failed: {e}") from e
    finally:
        torch.set_num_threads(saved)


def _write_errors(out: Path, failures: Sequence[JobFailure]) -> None:
    try:  # never through a link (refused before the run; O_NOFOLLOW for one made meanwhile)
        fd = os.open(out / ERRORS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a") as f:
            f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}: {len(failures)} job(s) failed\n")
            for fl in failures:
                f.write(f"## job {fl.job}: {fl.error}\n{fl.traceback}\n")
    except OSError:
        pass
