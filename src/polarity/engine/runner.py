"""Running a spec into a run directory: checks, lock, resume, executors, commits, progress.

A run directory holds ``spec.json`` (experiment, preset, hparams, hash), ``results.sqlite`` (see
``polarity.store``), ``run.lock`` and ``report/``.  ``run_spec`` is idempotent: it computes only
the jobs whose trials are not all complete, so rerunning the same command after an interruption
(even SIGKILL) completes the run with every trial exactly once and the numbers of an
uninterrupted run.

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

import fcntl
import json
import os
import platform
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import experiments
from ..experiments.base import MAX_GRID_TRIALS, Experiment, ExperimentError, Job, TrialKey, hparams_dict
from ..files import atomic_write
from ..store import FILENAME, Grid, Store, StoreError, repair, upgrade
from .executors import Outcome, check_device, make_executor, probe_ray, set_threads
from .progress import DEFAULT_EVERY_S, Progress
from .spec import (SPEC_FORMAT, GridChange, Spec, current_hparams, grid_change, hparams_from_dict, spec_diff,
                   spec_format)

SPEC_FILE = "spec.json"
LOCK_FILE = "run.lock"
ERRORS_FILE = "errors.log"
# the files of a run directory that no output (``export --csv``) may ever replace
RUN_FILES = (SPEC_FILE, FILENAME, f"{FILENAME}-wal", f"{FILENAME}-shm", f"{FILENAME}-journal", LOCK_FILE,
             ERRORS_FILE)


class RunDirError(ExperimentError):
    """The run directory cannot be used (another spec, unreadable, read-only, full, ...)."""


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


def _version() -> str:
    try:
        from .._version import __version__

        return str(__version__)
    except Exception:  # pragma: no cover
        return "unknown"


# ----------------------------------------------------------------------------- run directories

def read_spec_file(out: Path) -> dict[str, Any] | None:
    p = Path(out) / SPEC_FILE
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read {p}: {e}") from None
    if not (isinstance(data, dict) and isinstance(data.get("experiment"), str)
            and isinstance(data.get("hparams"), dict)):
        raise RunDirError(f"{p} is not a polarity spec (a JSON object with an experiment name and its "
                          f"hparams), it holds {type(data).__name__} {json.dumps(data)[:60]}")
    return data


def check_path(out: Path, what: str = "run directory") -> None:
    """A clear error for a path the system refuses outright (a name over 255 bytes, a path over
    its limit, a file where a directory must be, no permission to look)."""
    try:
        os.stat(out)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as e:
        raise RunDirError(f"{what} {out}: {e.strerror or e}"
                          + (" (each name in a path may have at most 255 bytes)" if e.errno == 36 else "")) from None


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


def _meta_spec(meta: Mapping[str, Any], db: Path) -> dict[str, Any]:
    """The database's record of its spec, shaped like ``spec.json``, under the current names; a
    record whose ``hparams`` is not an object is refused (the database was damaged or edited)."""
    hparams = meta.get("hparams")
    if not isinstance(hparams, dict):
        raise RunDirError(f"{db}: its run metadata 'hparams' is {type(hparams).__name__} {json.dumps(hparams)[:40]}, "
                          "not an object; the database is damaged or was edited. Nothing was written; restore it "
                          "from a copy")
    if meta.get("experiment") in experiments.names():
        hparams = current_hparams(experiments.get(meta["experiment"]), hparams, spec_format(meta))
    return {"experiment": meta.get("experiment"), "hash": meta.get("spec_hash"), "hparams": hparams}


def check_agrees(out: Path, data: Mapping[str, Any], meta: Mapping[str, Any], spec: Spec | None = None) -> None:
    """Refuse to read results under a spec.json that is not the spec they were computed for
    (``meta``: the database's own record, written with its first row and updated when the run
    grows).  A spec.json whose grid holds the database's (``spec``: it, parsed) is a run whose
    growth was interrupted between writing spec.json and the database: every row fits it (so is
    a spec-format upgrade stopped there: the same spec under its new names)."""
    if not meta:
        return
    recorded = _meta_spec(meta, out / FILENAME)
    if (meta.get("spec_hash"), meta.get("experiment"), meta.get("hparams")) != (
            data.get("hash"), data.get("experiment"), data.get("hparams")):
        if spec is not None and grid_change(recorded, spec).kind in ("same", "grow"):
            return
        diff = spec_diff(data, meta) or [f"hash {data.get('hash')} vs {meta.get('spec_hash')}"]
        raise RunDirError(
            f"{out / SPEC_FILE} (spec {str(data.get('hash'))[:10]}) does not describe the results in "
            f"{out / FILENAME} (computed for spec {str(meta.get('spec_hash'))[:10]}); differences "
            f"(spec.json vs database): {'; '.join(diff[:8])}{' ...' if len(diff) > 8 else ''}. "
            "Nothing was written; restore the run's own spec.json")


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


_SQLITE_MAGIC = (b"SQLite format 3\x00", b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83",  # a database, its WAL
                 b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7")  # its rollback journal


def _is_database(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return any(head.startswith(m) for m in _SQLITE_MAGIC)


def check_output(out: Path, path: str | Path, flag: str) -> None:
    """Refuse an output file that is one of the run's own files (its database, its spec, ...),
    any SQLite database or file named like a run's own (another run's ``results.sqlite``,
    ``spec.json``), or a path inside the run that goes through a symbolic link."""
    p = Path(path)
    check_path(Path(out))
    check_path(p, flag)
    for name in RUN_FILES:
        own = Path(out) / name
        same = own.resolve() == p.resolve()
        if not same and own.exists() and p.exists():
            try:
                same = os.path.samefile(own, p)
            except OSError:
                same = False
        if same:
            raise RunDirError(f"{flag} {p} is the run's own {name}; writing it would destroy the run. "
                              "Nothing was written; choose another file")
    refuse_overwrite(p, flag)
    link = _link_inside(Path(out), p)
    if link is not None:
        raise RunDirError(f"{flag} {p} goes through {link}, a symbolic link inside the run directory; polarity "
                          "never writes through a link in a run (it could replace a file elsewhere). Nothing "
                          "was written; remove the link or choose another file")


def refuse_overwrite(path: str | Path, flag: str) -> None:
    """Refuse an output file (``export --csv``, ``show --toml``, ...) that is a SQLite database
    (by its content) or named like a run's own file (another run's ``results.sqlite``,
    ``spec.json``): no output replaces one, whoever's."""
    p = Path(path)
    if p.name in RUN_FILES or _is_database(p):
        what = "a SQLite database" if _is_database(p) else f"named like a run's own {p.name}"
        raise RunDirError(f"{flag} {p} is {what}; an output never replaces a database or a run's files, "
                          "whoever's. Nothing was written; choose another file")


def _link_inside(out: Path, p: Path) -> Path | None:
    """The first symbolic link among the components of ``p`` below the run directory ``out``
    (``p`` itself included), or None (also when ``p`` is not inside ``out``)."""
    root, target = Path(os.path.abspath(out)), Path(os.path.abspath(p))
    try:
        parts = target.relative_to(root).parts
    except ValueError:
        return None
    at = root
    for part in parts:
        at = at / part
        if at.is_symlink():
            return at
    return None


def refuse_links(out: Path, where: Path) -> None:
    """Raise ``RunDirError`` when ``where`` (a directory the run writes, e.g. ``report/``), a
    component of it below the run directory, or anything inside it is a symbolic link."""
    link = _link_inside(out, where)
    if link is None and where.is_dir():
        for top, dirs, files in os.walk(where):
            for name in (*dirs, *files):
                if os.path.islink(os.path.join(top, name)):
                    link = Path(top) / name
                    break
            if link is not None:
                break
    if link is not None:
        raise RunDirError(f"{link} is a symbolic link; polarity never writes through a link in a run "
                          "directory (it could overwrite a file elsewhere). Nothing was written; remove it "
                          "and rerun")


def check_run_dir(out: Path, spec: Spec) -> GridChange | None:
    """Refuse a directory that holds another spec or something that is not a run.  Returns None
    for a new or empty directory, else how its spec relates to ``spec``: the same, or ``grow``
    (its grid is part of ``spec``'s: the run is extended).  A smaller grid, a grid that neither
    holds nor is held by the stored one, and any other changed hyper-parameter are refused, with
    what to do.  Touches nothing."""
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
    fmt = spec_format(stored)
    exp = experiments.get(spec.experiment)
    old_names = [k for k in stored.get("hparams", {}) if k in exp.renamed] if fmt < SPEC_FORMAT else []
    if old_names and stored.get("experiment") == spec.experiment:
        stored = {**stored, "hparams": current_hparams(exp, stored["hparams"], fmt)}
    change = grid_change(stored, spec)
    if old_names and change.kind in ("same", "grow"):
        renames = ", ".join(f"{k} (now {exp.renamed[k]})" for k in old_names)
        raise RunDirError(
            f"--out {out} was made with spec format {fmt} (its hyper-parameters {renames}); polarity now "
            f"writes spec format {SPEC_FORMAT}. Its results are still reported and exported as they are "
            f"(`polarity report {out}`, `polarity export {out}`); to resume or grow it, run `polarity store "
            f"upgrade {out}` once (it rewrites the run's spec under the new names; no trial changes), then "
            "rerun. Nothing was changed")
    if change.kind in ("same", "grow"):
        return change
    if change.kind == "other":
        diff = spec_diff(stored, spec.to_json()) or [f"hash {stored.get('hash')} vs {spec.hash}"]
        grows = ", ".join(experiments.get(spec.experiment).grid_names()) if change.grid else ""
        raise RunDirError(
            f"--out {out} holds a run of a different spec ({stored.get('experiment')}, hash "
            f"{str(stored.get('hash'))[:10]}); differences (stored vs requested): {'; '.join(diff[:8])}"
            f"{' ...' if len(diff) > 8 else ''}. Nothing was changed; use another --out"
            + (f" (a run grows only along {grows}, every other field as stored)" if grows else ""))
    diff = "; ".join(change.grid)
    if change.kind == "shrink":
        raise RunDirError(
            f"--out {out} holds a larger grid than requested ({diff}, stored vs requested), which includes "
            f"every requested trial: `polarity report {out}` reports them all; to resume or grow that run, "
            f"request its grid or a larger one (its command is in {out / SPEC_FILE}); for a separate run of "
            "the smaller grid, use another --out. Nothing was changed")
    raise RunDirError(
        f"--out {out} holds a grid that neither holds nor is part of the requested one ({diff}, stored vs "
        f"requested); a run grows into a grid that holds its own: request "
        f"{' '.join('--set ' + u for u in change.union)} to grow it, or use another --out. Nothing was changed")


def _check_writable(out: Path) -> None:
    """A read-only --out or database is refused before anything is written or computed."""
    for p in (out, *(out / name for name in (FILENAME, f"{FILENAME}-wal", f"{FILENAME}-shm", LOCK_FILE))):
        if p.exists() and not os.access(p, os.W_OK):
            raise RunDirError(f"{p} is read-only: make it writable to run into --out {out}, or choose "
                              "another --out. Nothing was changed")


class RunLock:
    """The one writer's exclusive lock on a run directory: ``flock`` on ``DIR/run.lock``.  While
    it is held the file names the holder (pid, host, start, command); it is emptied on release.
    The kernel releases the lock when the process ends, however it ends."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, command: Sequence[str] | None = None) -> None:
        try:  # never through a link: a run directory from a tarball could point it at any file
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if self.path.is_symlink():
                raise RunDirError(
                    f"{self.path} is a symbolic link (to {os.readlink(self.path)}); polarity never writes "
                    "through a link in a run directory (it would empty the file it points to). Nothing was "
                    "changed; remove the link and rerun") from None
            raise RunDirError(f"cannot write run directory {self.out}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if isinstance(e, BlockingIOError):
                raise RunDirError(
                    f"--out {self.out} is in use by another polarity run ({self.holder()}); wait for it "
                    "to finish, or choose another --out. Nothing was changed") from None
            raise RunDirError(f"cannot lock {self.path}: {e.strerror or e}") from None
        self.fd = fd
        info = {"pid": os.getpid(), "host": platform.node(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": list(command or sys.argv)}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:
            pass  # a full disk: the lock still holds, a second writer just cannot name us

    def holder(self, wait_s: float = 2.0) -> str:
        """Who holds the lock, from what the holder wrote (it writes right after locking)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                info = json.loads(self.path.read_text())
                pid, host = int(info["pid"]), str(info.get("host", "?"))
                if host != platform.node() or _alive(pid):
                    return (f"pid {pid} on {host}, started {info.get('started', '?')}: "
                            f"{' '.join(map(str, info.get('command') or []))}")
            except (OSError, ValueError, KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                return "a process that did not say which"
            time.sleep(0.05)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_spec(out: Path, spec: Spec, command: Sequence[str] | None,
                grown_from: Mapping[str, Any] | None = None) -> None:
    """Write ``spec.json``; ``grown_from``: the spec.json a grown run replaces (its hash, grid and
    command are kept in ``grown``, oldest first)."""
    p = out / SPEC_FILE
    data = spec.to_json()
    data["polarity_version"] = _version()
    if command:
        data["command"] = list(command)
    if grown_from is not None:
        names = experiments.get(spec.experiment).grid_names()
        old = grown_from.get("hparams") or {}
        data["grown"] = [*grown_from.get("grown", []), {
            "hash": grown_from.get("hash"), "grid": {k: old.get(k) for k in names if k in old},
            "command": grown_from.get("command"), "until": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    atomic_write(p, json.dumps(data, indent=2, sort_keys=True) + "\n")


def prepare_run_dir(out: Path, spec: Spec, command: Sequence[str] | None = None) -> tuple[RunLock, Store]:
    """Check, lock, create and open a run directory for ``spec``; returns the held lock and the
    store (the caller closes the store, then releases the lock).  A refusal changes nothing."""
    check_run_dir(out, spec)
    _check_writable(out)
    db = out / FILENAME
    if db.exists():
        with Store(db, readonly=True) as s:  # a newer, older or foreign schema is refused before any write
            s.check_current()
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
                _write_spec(out, spec, command, read_spec_file(out) if change is not None else None)
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
            # spec.json (written first) grew the run: the database's record follows it here, also
            # when an earlier growth (or spec-format upgrade) stopped between the two
            if grid_change(_meta_spec(meta, db), spec).kind not in ("same", "grow"):
                raise RunDirError(f"{db} belongs to spec {meta.get('spec_hash')!s:.10}, not {spec.hash:.10}; "
                                  "nothing was changed")
            try:
                store.set_meta({"spec_hash": spec.hash, "hparams": spec.hparams, "preset": spec.preset,
                                "format": SPEC_FORMAT, "grown": [*(meta.get("grown") or []), {
                                    "hash": meta.get("spec_hash"),
                                    "until": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]})
            except StoreError as e:
                raise RunDirError(str(e)) from None
        if not meta:
            try:
                store.set_meta({"spec_hash": spec.hash, "experiment": spec.experiment, "preset": spec.preset,
                                "format": SPEC_FORMAT, "hparams": spec.hparams,
                                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "polarity_version": _version(), "elapsed_s": 0.0})
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
    _check_writable(out)
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
    _check_writable(out)
    lock = RunLock(out)
    lock.acquire(command)
    try:
        done = upgrade(out / FILENAME)
        data = read_spec_file(out) or {}
        done["spec"] = None
        if spec_format(data) < SPEC_FORMAT:
            new = {**spec.to_json(), "polarity_version": _version(),
                   "upgraded_from": {"format": spec_format(data), "hash": data.get("hash"),
                                     "command": data.get("command")}}
            atomic_write(out / SPEC_FILE, json.dumps(new, indent=2, sort_keys=True) + "\n")
            with Store(out / FILENAME) as s:
                if s.meta():
                    s.set_meta({"spec_hash": spec.hash, "hparams": spec.hparams, "format": SPEC_FORMAT})
            done["spec"] = [spec_format(data), SPEC_FORMAT]
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
        version = _version()
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
