"""How accelops' messages reach the user: one place, for the library and for the console scripts.

Every accelops module logs through ``get_logger(__name__)``: the ``"accelops"`` logger or a child of it
(``"accelops.runtime.engine"``), whose records go up to ``"accelops"``. The first ``get_logger`` call of a
process sets ``"accelops"`` up, whichever layer makes it (an op build, the engine's ``steps_per_print`` lines,
``ds_report``): unless the user configured that logger already, it gets one handler that writes the bare
message to the current ``sys.stderr``, level INFO, and does not propagate (so build progress and step lines
show on a terminal, once). Route or silence it with the usual logging configuration of that logger: its level,
its handlers (``logging.config.dictConfig`` replaces them), or ``propagate = True`` with the handler removed.
Handlers or a level the user set on it before the first call are kept as they are.
"""
from __future__ import annotations

import logging
import sys

__all__ = ["DefaultHandler", "LOGGER_NAME", "get_logger"]

LOGGER_NAME = "accelops"


class DefaultHandler(logging.StreamHandler):
    """Writes ``%(message)s`` to whatever ``sys.stderr`` is at the time of the message."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # not setStream: that flushes the old stream, which may be closed by now
        super().emit(record)


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """``logging.getLogger(name)`` for ``"accelops"`` or ``"accelops.<module>"``, after setting up the
    ``"accelops"`` logger on the first call of the process (see the module docstring)."""
    if name != LOGGER_NAME and not name.startswith(LOGGER_NAME + "."):
        raise ValueError(f"get_logger serves the {LOGGER_NAME!r} logger and its children, not {name!r}")
    _set_up(logging.getLogger(LOGGER_NAME))
    return logging.getLogger(name)


def _set_up(logger: logging.Logger) -> None:
    if getattr(logger, "_accelops_configured", False):
        return
    logger._accelops_configured = True  # once per process, even if the user removes our handler later
    if not logger.handlers:
        logger.addHandler(DefaultHandler())
        logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
