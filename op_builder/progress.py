"""One progress message for long waits (compiling, waiting for another builder's lock).

Messages go to the ``accelops`` logger (see ``messages``): one when the wait starts and one, with the
total, when it ends. When the default handler writes to a terminal, the line is rewritten in place
every second with the elapsed time instead.
"""
from __future__ import annotations

import sys
import threading
import time

from .messages import default_handler_on_terminal, log


class Progress:
    """Context manager: ``with Progress("accelops: building cpu_adam (avx2)"): ...``."""

    def __init__(self, message: str) -> None:
        self.message = message
        self._stop = threading.Event()
        self._thread = None
        self._start = 0.0

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            sys.stderr.write(f"\r{self.message} ... {time.monotonic() - self._start:.0f} s")
            sys.stderr.flush()

    def __enter__(self) -> "Progress":
        self._start = time.monotonic()
        if default_handler_on_terminal():
            sys.stderr.write(f"{self.message} ... 0 s")
            sys.stderr.flush()
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        else:
            log.info("%s ...", self.message)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        outcome = "failed" if exc_type else "done"
        prefix = "\r" if self._thread is not None else ""
        log.info("%s%s ... %s in %.1f s", prefix, self.message, outcome, time.monotonic() - self._start)
