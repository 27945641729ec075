"""Files on disk: the one cache root, the one atomic write and the one file hash every module uses."""
from __future__ import annotations

import hashlib
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

# a temporary of atomic_write: ".<name, cut>.<host tag>-<pid>.<random>.tmp<suffix>"
_TMP = re.compile(r"^\..*\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp(\.[^.]*)?$")
STALE_AFTER_S = 86400.0  # a temporary this old is stale whoever wrote it


def cache_root() -> Path:
    """``$POLARITY_CACHE``, or ``~/.cache/polarity``: decoded datasets and pretrained sources."""
    env = os.environ.get("POLARITY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "polarity"


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[str], None]) -> Path:
    """Write ``path`` so that readers see the old file or the whole new one, never a part.

    ``data`` is the content (bytes or text) or a function that writes a given temporary path
    (e.g. ``lambda p: np.save(p, a)``).  The temporary file lives beside ``path``, is flushed to
    disk, gets the usual umask mode (not ``mkstemp``'s 0600) and replaces ``path`` in one rename;
    on any error it is removed and ``path`` is left as it was.  A writer killed before the
    rename (SIGKILL) cannot remove its temporary: the next write into the same directory does
    (``stale_temporaries``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in stale_temporaries(path.parent):
        try:
            old.unlink()
        except OSError:
            pass  # another writer removed it first, or the directory is read-only
    suffix = ".tmp" + (path.suffix if len(path.suffix) <= 32 else "")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.{_host_tag()}-{os.getpid()}.",
                               suffix=suffix)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _host_tag() -> str:
    """Six hex digits naming this machine in a temporary's name (a shared directory's temporary
    of another machine's live writer is never taken for a dead one of ours)."""
    return hashlib.sha256(platform.node().encode()).hexdigest()[:6]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """The temporaries ``atomic_write`` left in ``directory`` when its writer died before the
    rename: its name pattern, written on this machine by a process that no longer exists, or
    older than ``STALE_AFTER_S`` (a day) whoever wrote it."""
    out = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return out
    host = _host_tag()
    for e in entries:
        m = _TMP.match(e.name)
        if not m or not e.is_file(follow_symlinks=False):
            continue
        try:
            old = time.time() - e.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if old or m["host"] == host and not _alive(int(m["pid"])):
            out.append(Path(e.path))
    return out


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's contents, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = ["atomic_write", "cache_root", "sha256_file", "stale_temporaries"]
