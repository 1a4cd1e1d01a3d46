"""accelops' messages (build progress, skipped prebuilt modules, rebuilds) go through ``logging``.

The logger is ``logging.getLogger("accelops")``. By default it has one handler that writes the bare
message to the current ``sys.stderr`` at level INFO and does not propagate, so build progress shows on a
terminal. Route or silence it with the usual logging configuration of that logger: its level, its
handlers (``logging.config.dictConfig`` replaces them), or ``propagate = True`` with the handler removed.
"""
from __future__ import annotations

import logging
import sys

LOGGER_NAME = "accelops"


class DefaultHandler(logging.StreamHandler):
    """Writes ``%(message)s`` to whatever ``sys.stderr`` is at the time of the message."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # not setStream: that flushes the old stream, which may be closed by now
        super().emit(record)


def _logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not getattr(logger, "_accelops_configured", False):
        logger._accelops_configured = True  # once per process, even if the user removes our handler
        if not logger.handlers:
            logger.addHandler(DefaultHandler())
            logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return logger


log = _logger()


def default_handler_on_terminal() -> bool:
    """True when messages reach a terminal through the default handler (progress may rewrite its line)."""
    if not log.isEnabledFor(logging.INFO) or not any(isinstance(h, DefaultHandler) for h in log.handlers):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
