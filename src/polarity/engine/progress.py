"""A tqdm progress bar over trials (done/total, rate, ETA); silent when stderr is not a terminal
or when asked to be quiet."""
from __future__ import annotations

import os
import sys


class Progress:
    def __init__(self, total: int, done: int = 0, *, desc: str = "", quiet: bool = False, stream=None):
        stream = stream if stream is not None else sys.stderr
        self.enabled = not quiet and bool(getattr(stream, "isatty", lambda: False)())
        self.bar = None
        if self.enabled:
            import shutil

            from tqdm import tqdm

            try:
                cols, lines = os.get_terminal_size(stream.fileno())
            except (AttributeError, OSError, ValueError):
                cols, lines = shutil.get_terminal_size((0, 0))
            # a pty without a size (cols/lines 0) would hide the bar
            size = {"dynamic_ncols": True} if cols > 0 and lines > 0 else {"ncols": 100, "nrows": 24}
            self.bar = tqdm(total=total, initial=done, desc=desc, unit="trial", file=stream,
                            smoothing=0.1, **size)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
