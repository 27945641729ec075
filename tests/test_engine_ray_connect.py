"""`--executor ray --address` where no Ray listens (issue 21 item 12): one line within the connect
timeout (it used to retry for more than 10 minutes, printing Ray's warnings despite --quiet),
nothing locked or written, and the wait is configurable."""
from __future__ import annotations

import socket
import time

import pytest

from polarity import cli, engine, experiments
from polarity.engine import executors, runner
from polarity.experiments.base import ExperimentError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# fixed ids: the free port differs between pytest-xdist workers, whose collections must agree
@pytest.mark.parametrize("address", ["127.0.0.1:1", f"127.0.0.1:{_free_port()}"], ids=["port-1", "free-port"])
def test_an_address_where_no_ray_listens_is_one_line_and_releases_the_run(tmp_path, capsys, address):
    out = tmp_path / "run"
    t0 = time.monotonic()
    code = cli.main(["run", "toy", "--set", "sample_sizes=8", "--executor", "ray", "--address", address, "--quiet",
                     "--out", str(out)])
    took = time.monotonic() - t0
    _, err = capsys.readouterr()
    assert code == 2 and took < 60, (took, err)
    assert err.startswith("polarity: error: ") and err.count("\n") == 1, err  # nothing from Ray
    assert f"cannot start or reach the Ray cluster at {address}" in err and "Connection refused" in err
    assert not out.exists()  # refused before the directory was created or locked
    engine.run_spec(engine.resolve(experiments.get("toy"), "quick", sets=["sample_sizes=8"]), out, quiet=True)
    lock = runner.RunLock(out)
    lock.acquire(["test"])
    lock.release()


def test_the_connect_timeout_is_configurable_and_checked(monkeypatch):
    seen = {}

    def silent(addr, timeout):
        seen["timeout"] = timeout
        raise socket.timeout("timed out")

    monkeypatch.setattr(executors.socket, "create_connection", silent)
    monkeypatch.setenv("POLARITY_RAY_CONNECT_TIMEOUT", "2.5")
    with pytest.raises(ExperimentError, match=r"no answer within 2.5 s \(POLARITY_RAY_CONNECT_TIMEOUT"):
        executors.probe_ray("10.1.2.3:6379")
    assert seen["timeout"] == 2.5
    monkeypatch.delenv("POLARITY_RAY_CONNECT_TIMEOUT")
    with pytest.raises(ExperimentError, match="within 30 s"):
        executors.probe_ray("10.1.2.3:6379")
    monkeypatch.setenv("POLARITY_RAY_CONNECT_TIMEOUT", "soon")
    with pytest.raises(ExperimentError, match="expected a number of seconds"):
        executors.probe_ray("10.1.2.3:6379")
    for bad in ("nohost", "host:port", "h:0", "h:70000"):
        with pytest.raises(ExperimentError, match="expected HOST:PORT"):
            executors.probe_ray(bad)
    executors.probe_ray(None)
    executors.probe_ray("auto")  # left to Ray


def _silent_listener():
    """A port that accepts connections and never answers (a firewall, a hung service)."""
    import threading

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    held = []
    threading.Thread(target=lambda: [held.append(s.accept()) for _ in iter(int, 1)], daemon=True).start()
    return s, f"127.0.0.1:{s.getsockname()[1]}"


def _grpc_server_without_ray():
    """An HTTP/2 gRPC server that is not a Ray head (it knows no Ray service)."""
    from concurrent import futures

    grpc = pytest.importorskip("grpc")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.mark.parametrize("kind, words", [("silent", "no answer within 1 s"), ("grpc", "gRPC UNIMPLEMENTED")])
def test_an_address_where_something_else_listens_is_one_line(tmp_path, capsys, monkeypatch, kind, words):
    """A TCP connection is not a Ray head: where something accepts but does not answer as one,
    Ray's own connection retried for minutes (issue 21 item 12); the probe's gRPC call to the
    head's GCS answers within POLARITY_RAY_CONNECT_TIMEOUT."""
    pytest.importorskip("ray")
    server, address = _silent_listener() if kind == "silent" else _grpc_server_without_ray()
    monkeypatch.setenv("POLARITY_RAY_CONNECT_TIMEOUT", "1")
    out = tmp_path / "run"
    try:
        code = cli.main(["run", "toy", "--set", "sample_sizes=8", "--executor", "ray", "--address", address,
                         "--quiet", "--out", str(out)])
    finally:
        server.close() if kind == "silent" else server.stop(None)
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("polarity: error: ") and err.count("\n") == 1, err
    assert f"cannot start or reach the Ray cluster at {address}" in err and words in err, err
    assert not out.exists()
