"""The source networks shipped with polarity, and resolving a source by name or path.

Each shipped source is a source directory under ``polarity/sources/zoo/<name>/`` whose manifest
names the command that regenerates it (``polarity source train ...``) and the accuracy reached.
"""
from __future__ import annotations

from pathlib import Path

from .directory import MANIFEST, SourceError

ZOO = Path(__file__).resolve().parent / "zoo"


def shipped() -> list[str]:
    """Names of the shipped sources."""
    if not ZOO.is_dir():
        return []
    return sorted(p.name for p in ZOO.iterdir() if (p / MANIFEST).is_file())


def as_path(text: str | Path) -> Path:
    """``text`` as a path, ``~`` expanded where a home directory is known."""
    try:
        return Path(text).expanduser()
    except RuntimeError:   # "~user" with no such user / no home directory
        return Path(text)


def resolve(name_or_path: str | Path) -> Path:
    """The directory of a shipped source name, or of a path to a source directory."""
    text = str(name_or_path)
    if text in shipped():
        return ZOO / text
    p = as_path(text)
    if p.is_dir():
        if not (p / MANIFEST).is_file():
            raise SourceError(f"{p} is a directory but not a source directory (no {MANIFEST})")
        return p
    from ..cli_errors import did_you_mean

    close = did_you_mean(text, shipped())
    guess = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise SourceError(f"unknown source {text!r}; {guess}it is neither a shipped source "
                      f"({', '.join(shipped()) or 'none'}) nor a source directory (train one with "
                      "'polarity source train DATASET --out DIR')")


__all__ = ["ZOO", "as_path", "shipped", "resolve"]
