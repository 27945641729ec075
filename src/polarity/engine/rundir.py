"""The files of a run directory and the rules for touching them: their names, the one writer's
lock (``run.lock``), ``spec.json`` read back, and the checks that no write goes where it must not
(a read-only directory, a symbolic link inside the run, an output that would replace a run's own
file or any SQLite database).  Nothing here knows what a spec means: ``growth`` compares specs,
``runner`` runs them.
"""
from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..experiments.base import ExperimentError
from ..store import FILENAME

SPEC_FILE = "spec.json"
LOCK_FILE = "run.lock"
ERRORS_FILE = "errors.log"
# the files of a run directory that no output (``export --csv``) may ever replace
RUN_FILES = (SPEC_FILE, FILENAME, f"{FILENAME}-wal", f"{FILENAME}-shm", f"{FILENAME}-journal", LOCK_FILE,
             ERRORS_FILE)


class RunDirError(ExperimentError):
    """The run directory cannot be used (another spec, unreadable, read-only, full, ...)."""


def polarity_version() -> str:
    try:
        from .._version import __version__

        return str(__version__)
    except Exception:  # pragma: no cover
        return "unknown"


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


def check_writable(out: Path) -> None:
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
