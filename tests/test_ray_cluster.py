"""A real two-node Ray cluster on one machine (issue 14): a head and a second node started with
``ray start`` (two raylets, token authentication), the second node running a Python that cannot
import polarity (a virtual environment holding only polarity's dependencies), so the package
reaches it through the job.  ``xor5d --preset quick`` gives the numbers of the local executor,
also when a worker is killed in the middle of a job (Ray runs the task again; the driver commits
it once), and a job whose worker keeps dying is reported as failed once its retries are spent.

Slow (a cluster start, ~1 minute) and heavy: each node gets one CPU and a small object store, and
every process the cluster started is stopped at the end, whatever happened.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from polarity import engine, store

# one pytest-xdist worker runs every test that starts Ray (the cluster fixture once; no two Rays at once)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]
ray = pytest.importorskip("ray")

OBJECT_STORE = str(80 * 2**20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _own_processes(marker: str) -> list[int]:
    """Processes whose environment carries this test's marker: the cluster's, and only them."""
    pids = []
    needle = f"POLARITY_RAY_TEST={marker}".encode()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if needle in (p / "environ").read_bytes().split(b"\0"):
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _bare_python(tmp: Path) -> Path:
    """A virtual environment with polarity's dependencies (torch, numpy, numba, ray, ...) on its
    path but not polarity: the site-packages of this one without its .pth files (the editable
    install is one)."""
    import site

    venv = tmp / "bare"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / ver / "site-packages" / "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    return venv / "bin" / "python"


def _wait_started(proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"ray start did not start (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    # Ray's socket paths must stay short: its session directory lives under a short /tmp path
    temp_dir = Path(tempfile.mkdtemp(prefix="pr-", dir="/tmp"))
    marker = secrets.token_hex(8)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
               POLARITY_RAY_TEST=marker, PYTHONUNBUFFERED="1")
    bare = _bare_python(tmp)
    node_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    check = subprocess.run([str(bare), "-c", "import polarity"], cwd=temp_dir, env=node_env, capture_output=True)
    assert check.returncode != 0 and b"No module named 'polarity'" in check.stderr
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--object-store-memory={OBJECT_STORE}",
              "--disable-usage-stats", "--block"]
    procs = []
    try:
        head_log = tmp / "head.log"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
             "--include-dashboard=false", f"--temp-dir={temp_dir}", *common],
            env=env, cwd=temp_dir, stdout=open(head_log, "w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_started(procs[0], head_log, 120)
        node_log = tmp / "node.log"
        procs.append(subprocess.Popen(
            [str(bare), "-m", "ray.scripts.scripts", "start", f"--address=127.0.0.1:{port}", *common],
            env=node_env, cwd=temp_dir, stdout=open(node_log, "w"), stderr=subprocess.STDOUT,
            start_new_session=True))
        _wait_started(procs[1], node_log, 120)
        yield {"address": f"127.0.0.1:{port}", "env": env, "marker": marker, "bare": bare}
    finally:
        for p in reversed(procs):  # `ray start --block` stops its node's processes on SIGTERM
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        deadline = time.monotonic() + 10
        while (left := _own_processes(marker)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in _own_processes(marker):  # what is left of this cluster, and nothing else
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def _run(cluster, out: Path, *more: str, kill_one: bool = False, kill_every: bool = False) -> tuple[int, str, list[int]]:
    """``polarity run xor5d --preset quick --executor ray --address ...`` in its own process (the
    driver); ``kill_one``: SIGKILL the first worker seen computing a job, ``kill_every``: every one."""
    argv = [sys.executable, "-m", "polarity", "run", "xor5d", "--preset", "quick", "--executor", "ray",
            "--address", cluster["address"], "--out", str(out), "--no-report", *more]
    driver_env = {k: v for k, v in cluster["env"].items() if k != "POLARITY_RAY_TEST"}
    p = subprocess.Popen(argv, env=driver_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed: list[int] = []
    deadline = time.monotonic() + 240
    while p.poll() is None and time.monotonic() < deadline:
        if (kill_every or (kill_one and not killed)):
            for pid in _own_processes(cluster["marker"]):
                if _title(pid).startswith("ray::_ray_job") and pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        time.sleep(0.02)
    if p.poll() is None:
        p.kill()
    out_text = p.communicate()[0]
    return p.returncode, out_text, killed


SPLIT = ("--set", "max_job_networks=9")  # quick's 72 networks in 9 jobs (quick itself is one job)


def _local(tmp_path_factory, *sets: str) -> pd.DataFrame:
    d = tmp_path_factory.mktemp("local") / "run"
    spec = engine.resolve(engine.get_experiment("xor5d"), "quick", sets=list(sets))
    assert engine.run_spec(spec, d, quiet=True).complete
    return store.epochs_frame(d)


@pytest.fixture(scope="module")
def local_quick(tmp_path_factory):
    return _local(tmp_path_factory)


@pytest.fixture(scope="module")
def local_split(tmp_path_factory):
    return _local(tmp_path_factory, SPLIT[1])


def _nodes(d: Path) -> set[str]:
    return {h.get("ray_node") for h in store.trials_frame(d)["hardware"]}


def test_quick_gives_the_local_numbers_and_survives_a_killed_worker(cluster, local_quick, tmp_path):
    code, text, killed = _run(cluster, tmp_path / "run", kill_one=True)
    assert code == 0, text
    assert killed, "no worker was seen computing the job to kill"
    assert "72/72 trials complete" in text
    pd.testing.assert_frame_equal(store.epochs_frame(tmp_path / "run"), local_quick, check_exact=True)


def test_jobs_run_on_both_nodes_the_one_without_polarity_included(cluster, local_split, tmp_path):
    code, text, killed = _run(cluster, tmp_path / "run", *SPLIT, kill_one=True)
    assert code == 0 and killed, text
    pd.testing.assert_frame_equal(store.epochs_frame(tmp_path / "run"), local_split, check_exact=True)
    assert len(_nodes(tmp_path / "run")) == 2
    with store.Store(tmp_path / "run" / store.FILENAME, readonly=True) as s:  # every trial once
        assert s.conn.execute("SELECT count(*), count(DISTINCT condition || n || width || trial) FROM trials"
                              ).fetchone() == (72, 72)


def test_a_job_whose_workers_keep_dying_fails_after_its_retries_and_the_rerun_completes(cluster, local_split,
                                                                                          tmp_path):
    code, text, killed = _run(cluster, tmp_path / "run", *SPLIT, "--retries", "1", kill_every=True)
    assert killed and code == 1, text
    assert "(after 1 retries)" in text, text
    code, text, _ = _run(cluster, tmp_path / "run", *SPLIT)
    assert code == 0, text
    pd.testing.assert_frame_equal(store.epochs_frame(tmp_path / "run"), local_split, check_exact=True)
