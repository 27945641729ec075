"""A file or directory nobody may write, for the tests of read-only runs (not a test module)."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only(p: Path):
    """A file or directory nobody may write: chmod for ordinary users, the immutable flag for root."""
    if os.geteuid() != 0:
        mode = p.stat().st_mode
        p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            p.chmod(mode)
        return
    r = subprocess.run(["chattr", "+i", str(p)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"running as root and cannot make {p} immutable: {r.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(p)], check=True)
