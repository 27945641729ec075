"""The source networks shipped with polarity, and resolving a source by name or path.

Each shipped source is a source directory under ``polarity/sources/zoo/<name>/`` whose manifest
names the command that regenerates it (``polarity source train ...``) and the accuracy reached.
"""
from __future__ import annotations

from pathlib import Path

from .directory import MANIFEST, SourceError

ZOO = Path(__file__).resolve().parent / "zoo"

# Why each shipped source is in the zoo (docs/sources.md, "The shipped sources"):
LEARNED = "learned"      # the current recipe, full budget: its signs are learned (init agreement <= 0.55)
RUNG = "dose rung"       # the current recipe on a short budget: partly learned on purpose (the dose study)
LEGACY = "legacy"        # the old recipe: its polarity is mostly its seed-0 init; earlier presets name it
SUPERSEDED = "superseded"  # the current recipe below its accuracy goal; kept because earlier runs name it
ROLES = {
    "cifar10-compact-w0.5": LEGACY,
    "fmnist-compact-w0.5": LEGACY,
    "cifar10-animals-compact-w0.5": LEGACY,
    "cifar10-compact-w0.5-e2-s6": RUNG,
    "cifar10-compact-w0.5-e4-s7": RUNG,
    "cifar10-compact-w0.5-e8-s8": RUNG,
    "cifar10-compact-w0.5-s1": SUPERSEDED,   # 2.7 points below the legacy source; earlier dose runs name it
    "cifar10-compact-w0.5-s4": LEARNED,
    "cifar10-compact-w0.5-e40-s5": LEARNED,
    "cifar10-compact-w0.5-e40-s9": LEARNED,
    "fmnist-compact-w0.5-s2": LEARNED,
    "cifar10-animals-compact-w0.5-s3": LEARNED,
}


def role(name: str) -> str | None:
    """Why the shipped source ``name`` is in the zoo (one of LEARNED, RUNG, LEGACY, SUPERSEDED), or
    None for a source that is not shipped."""
    return ROLES.get(name)


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


__all__ = ["ZOO", "LEARNED", "RUNG", "LEGACY", "SUPERSEDED", "ROLES", "role", "as_path", "shipped", "resolve"]
