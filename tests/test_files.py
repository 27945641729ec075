"""polarity.files.atomic_write: readers see the old file or the new one, and a writer killed
half-way (SIGKILL, a lost node) leaves no hidden full-size temporary behind for long: the next
write into that directory removes it (issue 21 item 16)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from polarity.files import atomic_write, stale_temporaries

KILLED_WRITER = """
import sys, time
from polarity.files import atomic_write

def slow(tmp):
    with open(tmp, "wb") as f:
        f.write(b"x" * 1_000_000)
        f.flush()
    print("written", flush=True)
    time.sleep(60)

atomic_write(sys.argv[1], slow)
"""


def _hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "results.csv"
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "written"
        (tmp,) = _hidden(tmp_path)
        assert (tmp_path / tmp).stat().st_size == 1_000_000
        # while the writer lives, its temporary is its own
        atomic_write(tmp_path / "other.csv", "a")
        assert _hidden(tmp_path) == [tmp]
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert stale_temporaries(tmp_path) == [tmp_path / tmp]
    atomic_write(tmp_path / "other.csv", "b")
    assert _hidden(tmp_path) == [] and not target.exists()
    assert (tmp_path / "other.csv").read_text() == "b"


def test_only_polarity_temporaries_of_dead_writers_on_this_host_are_removed(tmp_path, monkeypatch):
    from polarity import files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = files._host_tag()
    names = {
        f".a.csv.{host}-{dead}.abcd1234.tmp.csv": True,  # this host, writer gone
        f".a.csv.{host}-{os.getpid()}.abcd1234.tmp.csv": False,  # this host, writer alive
        f".a.csv.ffffff-{dead}.abcd1234.tmp.csv": False,  # another host's: it may still be writing
        ".a.csv.tmp": False,  # not ours
        "a.csv": False,
        ".notes": False,
    }
    for n in names:
        (tmp_path / n).write_text("x")
    assert sorted(stale_temporaries(tmp_path)) == sorted(tmp_path / n for n, stale in names.items() if stale)
    # anything of ours a day old is stale, whoever wrote it (e.g. another host's killed writer)
    old = time.time() - 2 * 86400
    os.utime(tmp_path / f".a.csv.ffffff-{dead}.abcd1234.tmp.csv", (old, old))
    atomic_write(tmp_path / "b.csv", "y")
    left = set(_hidden(tmp_path))
    assert left == {f".a.csv.{host}-{os.getpid()}.abcd1234.tmp.csv", ".a.csv.tmp", ".notes"}


def test_a_name_near_the_filesystem_limit_still_gets_a_temporary(tmp_path):
    name = "n" * 250 + ".csv"
    atomic_write(tmp_path / name, "z")
    assert (tmp_path / name).read_text() == "z" and _hidden(tmp_path) == []
