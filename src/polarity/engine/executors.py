"""Executors: run an experiment's jobs and hand each outcome back to the driver.

Every executor calls the same worker entry point, ``execute_job(name, hp, job, device)``, with
the experiment's NAME (never a pickled instance) and its hparams, and every one sets the same
torch thread count first (``hp.threads`` when the Hparams has that field, else 1), so a seed gives
identical numbers whatever the executor and worker count.  Only the driver writes results.

* ``LocalExecutor``: in process, one job after another;
* ``PoolExecutor``: ``--workers N`` processes (``spawn`` context);
* ``RayExecutor``: Ray tasks with ``num_cpus=1``; ``ray.init(address)`` or, without an address,
  a local Ray instance.
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ..experiments.base import ExperimentError, Job, TrialResult

EXECUTORS = ("local", "ray")


@dataclass
class Outcome:
    job: Job
    results: list[TrialResult] | None = None
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


def execute_job(name: str, hp: Any, job: Job, device: str = "cpu") -> tuple[list[TrialResult], dict, float]:
    """Worker entry point: look the experiment up by name, compute one job."""
    from .. import experiments
    from .hardware import hardware_info

    set_threads(hp)
    exp = experiments.get(name)
    t0 = time.perf_counter()
    results = exp.run_job(hp, job, device)
    wall = time.perf_counter() - t0
    return list(results), hardware_info(device), wall


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


def _pool_init(threads: int, parent: int) -> None:
    import os
    import threading

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

        self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                           initializer=_pool_init, initargs=(thread_count(hp), os.getpid()))
        futures = {self.pool.submit(execute_job, name, hp, job, device): job for job in jobs}
        try:
            for fut in cf.as_completed(futures):
                job = futures[fut]
                try:
                    results, hw, wall = fut.result()
                except Exception as e:  # noqa: BLE001
                    yield _failure(job, e)
                    continue
                yield Outcome(job, results, hw, wall)
        finally:
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


class RayExecutor(Executor):
    """Ray tasks (``num_cpus=1`` each).  Connects to ``address`` when given, else starts a local
    instance (with ``num_cpus`` CPUs when given) and shuts it down on close."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ModuleNotFoundError:
            raise ExperimentError("--executor ray needs the 'ray' package (pip install 'polarity[ray]')") from None
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
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

    def run(self, name, hp, jobs, device):
        ray = self.ray
        if str(device).startswith("cuda"):
            # one GPU per task; Ray sets CUDA_VISIBLE_DEVICES, so the task's device is plain "cuda"
            remote = ray.remote(num_cpus=1, num_gpus=1, max_retries=0)(execute_job)
            device = "cuda"
        else:
            remote = ray.remote(num_cpus=1, max_retries=0)(execute_job)
        refs = {remote.remote(name, hp, job, device): job for job in jobs}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    job = refs[ref]
                    try:
                        results, hw, wall = ray.get(ref)
                    except Exception as e:  # noqa: BLE001
                        yield _failure(job, e)
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


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None) -> Executor:
    if kind == "local":
        return LocalExecutor() if workers <= 1 else PoolExecutor(workers)
    if kind == "ray":
        return RayExecutor(address=address, num_cpus=workers if workers > 1 else None)
    raise ExperimentError(f"unknown executor {kind!r}; known: {', '.join(EXECUTORS)}")
