"""Progress over a run's trials, for a terminal or for a log.

On a terminal: a tqdm bar (done/total, rate, ETA).  On anything else (a file, ``nohup``, a batch
job, a CI log): one line when the run starts, one every ``every`` seconds (done/total trials, rate,
ETA) and one when it ends.  ``log(msg)`` prints a message of a phase that is not trials (source
pretraining: epoch, loss, accuracy) above the bar or as its own line.  ``quiet`` silences all.
"""
from __future__ import annotations

import os
import sys
import threading
import time

DEFAULT_EVERY_S = 30.0


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
            self.bar = tqdm(total=total, initial=done, desc=desc, unit="trial", file=self.stream,
                            smoothing=0.1, **size)
        elif self.mode == "log":
            before = f", {done} done before" if done else ""
            self._line(f"{desc}: {total - done} of {total} trials to compute{before}")
            self._ticker = threading.Thread(target=self._tick, name="polarity-progress", daemon=True)
            self._ticker.start()

    # -- what the runner calls ----------------------------------------------------------------
    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
        if self.bar is not None:
            self.bar.update(n)

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
        """``desc: done/total trials (pct%), elapsed, rate, ETA``: rate and ETA over the trials
        computed by this invocation (``final``: no ETA)."""
        with self._lock:
            done = self.done
        elapsed = time.monotonic() - self.t0
        new = done - self.start_done
        pct = 100.0 * done / self.total if self.total else 100.0
        parts = [f"{self.desc}: {done}/{self.total} trials ({pct:.0f}%)", f"{fmt_duration(elapsed)} elapsed"]
        rate = new / elapsed if new > 0 and elapsed > 0 else None
        if rate is not None:
            parts.append(f"{rate:.0f} trials/s" if rate >= 100 else f"{rate:.3g} trials/s" if rate >= 0.1
                         else f"{60 * rate:.3g} trials/min")
        if not final:
            parts.append(f"ETA {fmt_duration((self.total - done) / rate)}" if rate else "ETA unknown")
        return ", ".join(parts)

    def close(self) -> None:
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


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
