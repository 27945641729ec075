"""Progress over a run's trials, for a terminal or for a log.

On a terminal: a tqdm bar (done/total, rate, ETA, best validation error so far).  On anything
else (a file, ``nohup``, a batch job, a CI log): one line when the run starts, one every ``every``
seconds (done/total trials, best validation error so far, rate, ETA) and one when it ends.  The
rate is always in trials per minute.  ``log(msg)`` prints a message of a phase that is not trials
(source pretraining: epoch, loss, accuracy) above the bar or as its own line.  ``quiet`` silences
all.

Trials count when they finish inside a job, not only when their job is committed:
``trial_finished(val_error)`` reports one from wherever the job runs (an experiment's ``run_job``
may call it as each trial ends; the engine's worker entry reports every trial of a job the
experiment did not report itself).  In the driver's process the report goes to the active
``Progress``; a pool worker sends it to the driver through the channel its executor installs
(``set_channel``).  A trial counted early is not counted again when its job is committed.  The
best validation error is the lowest ``1 - val_acc`` at any recorded epoch of any finished trial.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Any, Callable, Iterable

from ..experiments.base import epoch_values

DEFAULT_EVERY_S = 30.0

# where this process's trial reports go: the active Progress (driver) or a queue to it (worker)
_channel: Callable[[int, float | None], None] | None = None
_reported = threading.local()  # trials the running job reported itself (see execute_job)


def set_channel(fn: Callable[[int, float | None], None] | None) -> None:
    """Send this process's trial reports to ``fn(n_trials, val_error)`` (None: drop them)."""
    global _channel
    _channel = fn


def trial_finished(val_error: float | None = None, n: int = 1) -> None:
    """``n`` trials of the running job finished, the best validation error among them being
    ``val_error`` (None: not known).  Cheap, and a no-op where nobody listens."""
    _reported.n = getattr(_reported, "n", 0) + n
    ch = _channel
    if ch is not None:
        try:
            ch(n, val_error)
        except Exception:  # noqa: BLE001 - progress must never fail a job
            pass


def best_val_error(result: Any) -> float | None:
    """The lowest ``1 - val_acc`` over a ``TrialResult``'s epochs (None when none is finite)."""
    errs = [1.0 - float(a) for a in epoch_values(getattr(result, "epochs", ()) or (), "val_acc")]
    errs = [x for x in errs if math.isfinite(x)]
    return min(errs) if errs else None


def report_results(results: Iterable[Any], already: int = 0) -> None:
    """After a job: report its trials' validation errors, counting only those beyond the
    ``already`` trials the experiment reported itself while the job ran."""
    results = list(results)
    errs = [e for e in map(best_val_error, results) if e is not None]
    trial_finished(min(errs) if errs else None, n=max(0, len(results) - already))


def job_started() -> None:
    _reported.n = 0


def job_reported() -> int:
    return getattr(_reported, "n", 0)


def fmt_duration(s: float) -> str:
    """``42s``, ``7m05s``, ``3h12m``."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: int, done: int = 0, *, desc: str = "", quiet: bool = False, stream=None,
                 every: float = DEFAULT_EVERY_S):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.start_done, self.desc = total, done, done, desc
        self.inner = 0  # trials finished inside jobs whose results are not committed yet
        self.best: float | None = None  # the best validation error so far
        self._shown = done  # what the bar shows
        self.every = float(every)
        self.t0 = time.monotonic()
        self.bar = None
        self.mode = "off" if quiet else ("bar" if _isatty(self.stream) else "log")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last = self.t0  # when the last line was printed
        self._ticker: threading.Thread | None = None
        if self.mode == "bar":
            import shutil

            from tqdm import tqdm

            try:
                cols, lines = os.get_terminal_size(self.stream.fileno())
            except (AttributeError, OSError, ValueError):
                cols, lines = shutil.get_terminal_size((0, 0))
            # a pty without a size (cols/lines 0) would hide the bar
            size = {"dynamic_ncols": True} if cols > 0 and lines > 0 else {"ncols": 100, "nrows": 24}
            # tqdm's own rate switches between it/s and s/it: ours, in the postfix, does not
            self.bar = tqdm(total=total, initial=done, desc=desc, unit="trial", file=self.stream,
                            smoothing=0.1, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                            "[{elapsed}<{remaining}{postfix}]", **size)
        elif self.mode == "log":
            before = f", {done} done before" if done else ""
            self._line(f"{desc}: {total - done} of {total} trials to compute{before}")
            self._ticker = threading.Thread(target=self._tick, name="polarity-progress", daemon=True)
            self._ticker.start()
        self._previous_channel = _channel
        if self.mode != "off":
            set_channel(self.trials_finished)

    # -- what the runner calls ----------------------------------------------------------------
    def update(self, n: int) -> None:
        """``n`` trials committed (those already reported finished inside their job included)."""
        with self._lock:
            self.done += n
            self.inner = max(0, self.inner - n)
        self._redraw()

    def trials_finished(self, n: int, val_error: float | None = None) -> None:
        """``n`` trials finished inside a running job (``trial_finished`` lands here)."""
        with self._lock:
            self.inner += n
            if val_error is not None and math.isfinite(val_error) and (self.best is None or val_error < self.best):
                self.best = float(val_error)
        self._redraw()

    def shown(self) -> int:
        """Trials finished: committed, plus those finished inside jobs still running."""
        with self._lock:
            return min(self.total, self.done + self.inner)

    def rate(self) -> float | None:
        """Trials per minute finished by this invocation (None before the first)."""
        new = self.shown() - self.start_done
        elapsed = time.monotonic() - self.t0
        return 60.0 * new / elapsed if new > 0 and elapsed > 0 else None

    def _redraw(self) -> None:
        if self.bar is None:
            return
        shown = self.shown()
        with self._lock:
            delta, self._shown = shown - self._shown, max(self._shown, shown)
        rate = self.rate()
        post = ", ".join(p for p in (fmt_rate(rate) if rate else "", fmt_best(self.best)) if p)
        self.bar.set_postfix_str(post, refresh=False)
        if delta > 0:
            self.bar.update(delta)
        else:
            self.bar.refresh()

    def write(self, msg: str) -> None:
        """A message (a failed job) now, whatever the cadence."""
        if self.mode == "bar":
            self.bar.write(msg, file=self.stream)
        elif self.mode == "log":
            self._line(msg)

    def log(self, msg: str) -> None:
        """A message of a phase that is not trials (pretraining a source): printed now; it also
        tells the log the run is alive, so the next status line waits ``every`` seconds."""
        self.write(msg)

    def status(self, final: bool = False) -> str:
        """``desc: done/total trials (pct%), best val error E, elapsed, rate, ETA``: rate (trials
        per minute) and ETA over the trials finished by this invocation (``final``: no ETA)."""
        done = self.shown()
        elapsed = time.monotonic() - self.t0
        pct = 100.0 * done / self.total if self.total else 100.0
        parts = [f"{self.desc}: {done}/{self.total} trials ({pct:.0f}%)"]
        if self.best is not None:
            parts.append(fmt_best(self.best))
        parts.append(f"{fmt_duration(elapsed)} elapsed")
        rate = self.rate()
        if rate is not None:
            parts.append(fmt_rate(rate))
        if not final:
            parts.append(f"ETA {fmt_duration(60 * (self.total - done) / rate)}" if rate else "ETA unknown")
        return ", ".join(parts)

    def close(self) -> None:
        if _channel == self.trials_finished:
            set_channel(self._previous_channel)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
            self._line(self.status(final=True))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- log mode -----------------------------------------------------------------------------
    def _line(self, msg: str) -> None:
        with self._lock:
            self._last = time.monotonic()
        try:
            print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or full log must not stop the run
            pass

    def _tick(self) -> None:
        while not self._stop.wait(max(0.05, self._last + self.every - time.monotonic())):
            if time.monotonic() - self._last >= self.every - 1e-3:
                self._line(self.status())


def fmt_rate(per_min: float) -> str:
    """One unit whatever the speed: ``0.25 trials/min``, ``12.5 trials/min``, ``36,000 trials/min``."""
    return f"{per_min:,.0f} trials/min" if per_min >= 100 else f"{per_min:.3g} trials/min"


def fmt_best(best: float | None) -> str:
    return "" if best is None else f"best val error {best:.4f}"


class WorkerReports:
    """A process pool's trial reports: each worker's channel puts ``(n, val_error)`` on
    ``queue``; the driver forwards them to its progress as they come (a thread polls) and before
    each job's outcome is handed on (``drain``).  A ``SimpleQueue``'s put is written before the
    worker returns, so a job's reports are read before its result and never count it twice."""

    def __init__(self, ctx) -> None:
        import threading

        self.queue = ctx.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="polarity-reports", daemon=True)
        self._thread.start()

    def drain(self) -> None:
        with self._lock:
            while not self.queue.empty():
                n, err = self.queue.get()
                trial_finished(err, n)

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.drain()
            except (OSError, EOFError, ValueError):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.queue.close()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
