"""Files on disk: the one cache root, the one atomic write and the one file hash every module uses."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def cache_root() -> Path:
    """``$POLARITY_CACHE``, or ``~/.cache/polarity``: decoded datasets and pretrained sources."""
    env = os.environ.get("POLARITY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "polarity"


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[str], None]) -> Path:
    """Write ``path`` so that readers see the old file or the whole new one, never a part.

    ``data`` is the content (bytes or text) or a function that writes a given temporary path
    (e.g. ``lambda p: np.save(p, a)``).  The temporary file lives beside ``path``, is flushed to
    disk, gets the usual umask mode (not ``mkstemp``'s 0600) and replaces ``path`` in one rename;
    on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
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


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's contents, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = ["atomic_write", "cache_root", "sha256_file"]
