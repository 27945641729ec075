"""Executors: run an experiment's jobs and hand each outcome back to the driver.

Every executor calls the same worker entry point, ``execute_job(name, hp, job, device)``, with
the experiment's NAME (never a pickled instance) and its hparams, and every one sets the same
torch thread count first (``hp.threads`` when the Hparams has that field, else 1), so a seed gives
identical numbers whatever the executor and worker count.  The worker encodes its trials for the
store (``store.pack_trial``); only the driver writes results.

* ``LocalExecutor``: in process, one job after another;
* ``PoolExecutor``: ``--workers N`` processes (``spawn`` context);
* ``RayExecutor``: Ray tasks with ``num_cpus=1``; ``ray.init(address)`` or, without an address,
  a local Ray instance.  On a cluster the jobs carry the polarity package with them (Ray's
  ``runtime_env`` ``py_modules``: nodes need Python and polarity's dependencies, not polarity),
  and the cache directories the run prepared (a pretrained source) are shipped to nodes that
  lack them.  A task whose worker process or node is lost is retried up to ``retries`` times
  (system failures only: an exception raised by the job is never retried), then reported as a
  failed job.  Each job's results reach the driver once, whatever was retried.  A cluster
  address is probed first (``probe_ray``: a TCP connection, then one gRPC call to the head's
  GCS, each within ``POLARITY_RAY_CONNECT_TIMEOUT`` seconds, default 30), so an address where no
  Ray listens, or where something else does, is one clear error, not a connection Ray retries
  for minutes.

``docs/engine.md`` describes threads, determinism and clusters.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..experiments.base import ExperimentError, Job
from ..store import PackedTrial
from . import progress

EXECUTORS = ("local", "ray")
CONNECT_TIMEOUT_S = 30.0  # default of POLARITY_RAY_CONNECT_TIMEOUT


@dataclass
class Outcome:
    job: Job
    results: list[PackedTrial] | None = None
    hardware: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    error: str | None = None  # "ExceptionType: message"
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def thread_count(hp: Any) -> int:
    t = getattr(hp, "threads", None)
    try:
        t = int(t) if t is not None else 1
    except (TypeError, ValueError):
        t = 1
    return max(1, t)


def set_threads(hp: Any) -> int:
    import torch

    n = thread_count(hp)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def execute_job(name: str, hp: Any, job: Job, device: str = "cpu") -> tuple[list[PackedTrial], dict, float]:
    """Worker entry point: look the experiment up by name, compute one job, encode its trials
    for the store (the driver then only inserts bytes)."""
    from .. import experiments
    from ..store import pack_trial
    from .hardware import hardware_info

    set_threads(hp)
    exp = experiments.get(name)
    t0 = time.perf_counter()
    progress.job_started()
    results = exp.run_job(hp, job, device)
    wall = time.perf_counter() - t0
    progress.report_results(results, already=progress.job_reported())  # to the driver's progress
    return [pack_trial(r) for r in results], hardware_info(device), wall


def _describe(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
    if isinstance(cause, BaseException):
        exc = cause
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _failure(job: Job, exc: BaseException) -> Outcome:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    cause = exc.__cause__
    if cause is not None and type(cause).__name__ == "_RemoteTraceback":
        tb = str(cause) + "\n" + tb
    return Outcome(job, error=_describe(exc), traceback=tb)


class Executor:
    name = "base"

    def ship(self, dirs: Sequence[Path]) -> None:
        """Make the directories a run prepared (``Experiment.prepare``) reachable by the workers;
        workers on this machine read them where they are."""

    def run(self, name: str, hp: Any, jobs: Sequence[Job], device: str) -> Iterator[Outcome]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """In process, sequentially.  Sets the torch thread count like a worker would and restores
    the previous value on close."""

    name = "local"

    def __init__(self) -> None:
        self._saved: int | None = None

    def run(self, name, hp, jobs, device):
        import torch

        if self._saved is None:
            self._saved = torch.get_num_threads()
        for job in jobs:
            try:
                results, hw, wall = execute_job(name, hp, job, device)
            except Exception as e:  # noqa: BLE001 - reported per job by the driver
                yield _failure(job, e)
                continue
            yield Outcome(job, results, hw, wall)

    def close(self) -> None:
        if self._saved is not None:
            import torch

            torch.set_num_threads(self._saved)
            self._saved = None


def _pool_init(threads: int, parent: int, reports=None) -> None:
    import os
    import threading

    if reports is not None:  # trial reports go to the driver's progress (progress.trial_finished)
        progress.set_channel(lambda n, err: reports.put((n, err)))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)

    def watch() -> None:  # a driver killed with SIGKILL must not leave workers behind
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="polarity-parent-watch", daemon=True).start()


class PoolExecutor(Executor):
    """A pool of ``workers`` spawned processes; outcomes arrive as jobs finish."""

    name = "pool"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ExperimentError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.pool = None

    def run(self, name, hp, jobs, device):
        import concurrent.futures as cf
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        reports = progress.WorkerReports(ctx)
        self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_pool_init,
                                           initargs=(thread_count(hp), os.getpid(), reports.queue))
        futures = {self.pool.submit(execute_job, name, hp, job, device): job for job in jobs}
        try:
            for fut in cf.as_completed(futures):
                job = futures[fut]
                reports.drain()  # the job's own reports first: they were sent before its result
                try:
                    results, hw, wall = fut.result()
                except Exception as e:  # noqa: BLE001
                    yield _failure(job, e)
                    continue
                yield Outcome(job, results, hw, wall)
        finally:
            self.close()
            reports.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def package_dir() -> Path:
    """The directory of the polarity package this driver runs (what a Ray job ships)."""
    return Path(__file__).resolve().parent.parent


def collect_dirs(dirs: Sequence[Path]) -> dict[str, list[tuple[str, bytes]]]:
    """The files of prepared cache directories, by directory relative to the cache root, each
    directory's files in the order they were written (hidden files, e.g. locks, left out)."""
    from ..files import cache_root

    root = cache_root().resolve()
    out: dict[str, list[tuple[str, bytes]]] = {}
    for d in dirs:
        d = Path(d).resolve()
        try:
            rel = d.relative_to(root).as_posix()
        except ValueError:
            continue  # not under the cache root: workers are given its own path
        files = sorted((p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime_ns)
        out[rel] = [(p.name, p.read_bytes()) for p in files]
    return out


def materialise(files: Mapping[str, Sequence[tuple[str, bytes]]]) -> int:
    """Re-create shipped cache directories under this node's cache root: the files it lacks,
    atomically, in the order they were written (a reader never sees a directory's last file
    before the others).  Returns the number of files written."""
    from ..files import atomic_write, cache_root

    root, n = cache_root(), 0
    for rel, entries in files.items():
        for name, data in entries:
            p = root / rel / name
            if not p.exists():
                atomic_write(p, data)
                n += 1
    return n


def _ray_job(name: str, hp: Any, job: Job, device: str, files: Mapping | None):
    """A Ray task: the shipped directories first, then the job; the node that ran it is
    recorded with its hardware."""
    import ray

    if files:
        materialise(files)
    results, hw, wall = execute_job(name, hp, job, device)
    hw["ray_node"] = ray.get_runtime_context().get_node_id()
    return results, hw, wall


def connect_timeout() -> float:
    """Seconds to wait for a Ray cluster's head: ``$POLARITY_RAY_CONNECT_TIMEOUT`` or 30."""
    v = os.environ.get("POLARITY_RAY_CONNECT_TIMEOUT", "").strip()
    try:
        t = float(v) if v else CONNECT_TIMEOUT_S
    except ValueError:
        t = math.nan
    if not 0 < t < math.inf:
        raise ExperimentError(f"POLARITY_RAY_CONNECT_TIMEOUT={v!r}: expected a number of seconds > 0")
    return t


def probe_ray(address: str | None, timeout: float | None = None) -> None:
    """Reach the head of the Ray cluster at ``address`` (HOST:PORT) with a TCP connection within
    ``timeout`` seconds (``connect_timeout()``), or raise the one-line ``ExperimentError`` that
    says it cannot be reached.  Nothing to do without an address ('auto' and ray:// addresses
    are left to Ray)."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ExperimentError(f"--address {address!r}: expected HOST:PORT of a Ray cluster's head, e.g. "
                              "10.0.0.5:6379")
    t = connect_timeout() if timeout is None else timeout
    where = f"cannot start or reach the Ray cluster at {address}"
    no_answer = f"{where}: no answer within {t:g} s (POLARITY_RAY_CONNECT_TIMEOUT sets the wait)"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=t).close()
    except socket.timeout:
        raise ExperimentError(no_answer) from None
    except OSError as e:
        raise ExperimentError(f"{where}: {e.strerror or e} (is `ray start --head` running there, on that "
                              "port?)") from None
    status = _gcs_status(f"{host}:{port}", t)
    if status == "DEADLINE_EXCEEDED":
        raise ExperimentError(no_answer + "; something accepts connections there but does not answer as a "
                              "Ray head") from None
    if status is not None:
        raise ExperimentError(f"{where}: what listens there does not answer as a Ray head's GCS does (gRPC "
                              f"{status}); is the port the head's (`ray start --head --port`, default 6379)?")


# a Ray head answers these (a cluster that asks for a token refuses the call, but answers it)
_RAY_ANSWERS = ("OK", "UNAUTHENTICATED", "PERMISSION_DENIED")


def _gcs_status(address: str, timeout: float) -> str | None:
    """Call the Ray head's GCS once (``GetClusterId``, what ``ray.init`` asks first) with a
    deadline: None when it answers as a Ray head does, else the gRPC status name.  Ray's own
    connection retries for minutes whatever answers (or does not) at the address.  Skipped
    (None) for a TLS cluster (``RAY_USE_TLS``) and without Ray's gRPC modules."""
    if os.environ.get("RAY_USE_TLS", "0").strip().lower() in ("1", "true"):
        return None
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        return None
    channel = grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)])
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
        return None
    except grpc.RpcError as e:
        name = e.code().name if callable(getattr(e, "code", None)) else "UNKNOWN"
        return None if name in _RAY_ANSWERS else name
    finally:
        channel.close()


class RayExecutor(Executor):
    """Ray tasks (``num_cpus=1`` each).  Connects to ``address`` when given (the jobs ship the
    polarity package with them), else starts a local instance (with ``num_cpus`` CPUs when
    given) and shuts it down on close.  ``retries``: how often a task whose worker or node was
    lost is run again before its job is reported as failed."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, retries: int = 3,
                 quiet: bool = False) -> None:
        probe_ray(address)
        try:
            import ray
        except ModuleNotFoundError:
            raise ExperimentError("--executor ray needs the 'ray' package (pip install 'polarity[ray]')") from None
        if retries < 0:
            raise ExperimentError(f"--retries must be >= 0, got {retries}")
        self.ray = ray
        self.retries = retries
        self.files: dict | None = None
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": quiet}
            if quiet:  # Ray's own warnings too
                kwargs["logging_level"] = logging.ERROR
            if address:
                kwargs["runtime_env"] = {"py_modules": [str(package_dir())]}
            attempts = 1 if address else 2  # a local start can time out on a loaded machine
            for attempt in range(attempts):
                try:
                    if address:
                        ray.init(address=address, **kwargs)
                    else:
                        ray.init(num_cpus=num_cpus, **kwargs)
                    break
                except Exception as e:  # noqa: BLE001 - connection refused, start-up timeout, ...
                    try:
                        ray.shutdown()
                    except Exception:  # noqa: BLE001
                        pass
                    if attempt + 1 < attempts:
                        continue
                    where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                    raise ExperimentError(f"cannot start or reach {where}: {_describe(e)}") from None
            self._started = True

    def ship(self, dirs):
        files = collect_dirs(dirs)
        self.files = files or None

    def run(self, name, hp, jobs, device):
        ray = self.ray
        opts: dict[str, Any] = {"num_cpus": 1, "max_retries": self.retries, "retry_exceptions": False}
        if str(device).startswith("cuda"):
            # one GPU per task; Ray sets CUDA_VISIBLE_DEVICES, so the task's device is plain "cuda"
            opts["num_gpus"] = 1
            device = "cuda"
        remote = ray.remote(**opts)(_ray_job)
        files = ray.put(self.files) if self.files else None
        refs = {remote.remote(name, hp, job, device, files): job for job in jobs}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    job = refs[ref]
                    try:
                        results, hw, wall = ray.get(ref)
                    except Exception as e:  # noqa: BLE001
                        out = _failure(job, e)
                        if not isinstance(e, ray.exceptions.RayTaskError):  # a lost worker or node
                            out.error += f" (after {self.retries} retries)"
                        yield out
                        continue
                    yield Outcome(job, results, hw, wall)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001
                    pass

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


def check_device(device: str, executor: str = "local") -> None:
    """A clear error for a device string torch does not know, or CUDA where there is none."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ExperimentError(f"--device {device!r}: {e}") from None
    if d.type == "cuda" and executor == "local" and not torch.cuda.is_available():
        raise ExperimentError(f"--device {device}: CUDA is not available on this machine")


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None,
                  retries: int = 3, quiet: bool = False) -> Executor:
    if kind == "local":
        return LocalExecutor() if workers <= 1 else PoolExecutor(workers)
    if kind == "ray":
        return RayExecutor(address=address, num_cpus=workers if workers > 1 else None, retries=retries,
                           quiet=quiet)
    raise ExperimentError(f"unknown executor {kind!r}; known: {', '.join(EXECUTORS)}")
