"""One progress line on stderr for long waits (compiling, waiting for another builder's lock).

On a terminal the line is rewritten in place every second with the elapsed time; otherwise it is
printed once when the wait starts and once more, with the total, when it ends.
"""
from __future__ import annotations

import sys
import threading
import time


class Progress:
    """Context manager: ``with Progress("accelops: building cpu_adam (avx2)"): ...``."""

    def __init__(self, message: str, stream=None) -> None:
        self.message = message
        self.stream = stream if stream is not None else sys.stderr
        self._stop = threading.Event()
        self._thread = None
        self._start = 0.0

    def _tty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.stream.write(f"\r{self.message} ... {time.monotonic() - self._start:.0f} s")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        self._start = time.monotonic()
        if self._tty():
            self.stream.write(f"{self.message} ... 0 s")
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        else:
            self.stream.write(f"{self.message} ...\n")
        self.stream.flush()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        outcome = "failed" if exc_type else "done"
        prefix = "\r" if self._thread is not None else ""
        self.stream.write(f"{prefix}{self.message} ... {outcome} in {time.monotonic() - self._start:.1f} s\n")
        self.stream.flush()
