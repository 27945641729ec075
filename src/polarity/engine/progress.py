"""A tqdm progress bar over trials (done/total, rate, ETA); silent when stderr is not a terminal
or when asked to be quiet."""
from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, done: int = 0, *, desc: str = "", quiet: bool = False, stream=None):
        stream = stream if stream is not None else sys.stderr
        self.enabled = not quiet and bool(getattr(stream, "isatty", lambda: False)())
        self.bar = None
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, unit="trial", file=stream,
                            dynamic_ncols=True, smoothing=0.1)

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
