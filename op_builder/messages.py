"""The build engine's messages (build progress, skipped prebuilt modules, rebuilds) go to the ``accelops``
logger, set up as every accelops message is (:mod:`accelops._logging`): on stderr by default, routed or
silenced by the usual logging configuration."""
from __future__ import annotations

import logging
import sys

from accelops._logging import DefaultHandler, get_logger

__all__ = ["DefaultHandler", "default_handler_on_terminal", "log"]

log = get_logger()


def default_handler_on_terminal() -> bool:
    """True when messages reach a terminal through the default handler (progress may rewrite its line)."""
    if not log.isEnabledFor(logging.INFO) or not any(isinstance(h, DefaultHandler) for h in log.handlers):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
