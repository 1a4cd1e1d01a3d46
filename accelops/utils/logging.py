"""DeepSpeed's ``deepspeed.utils.logger`` and ``log_dist``.

``logger`` is the ``"accelops"`` logger (:mod:`accelops._logging`: the bare message on stderr, level INFO;
configure it like any logger). DeepSpeed's is a logger named ``"DeepSpeed"`` at level WARNING that writes
to stdout, so its INFO messages, ``log_dist``'s default, show only after the level is lowered; here they
show, as the engine's own step lines do.

``log_dist(message, ranks=None, level=logging.INFO)`` follows DeepSpeed (deepspeed/utils/logging.py
``get_dist_msg``): without an initialised process group every process logs; with one, a rank logs when it
is in ``ranks`` or ``ranks[0] == -1`` (every rank), and ``ranks=None`` or ``[]`` logs on no rank. The
message is prefixed ``[Rank <rank>] `` (``[Rank -1] `` without a process group).
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional

from accelops._logging import get_logger

__all__ = ["log_dist", "logger"]

logger = get_logger()


def _rank() -> Optional[int]:
    """This process's rank, or None when no process group is initialised (torch is imported only when
    ``torch.distributed`` was, since a group cannot exist before that)."""
    import sys

    if "torch.distributed" not in sys.modules:
        return None
    from accelops.comm import get_rank, is_initialized

    return get_rank() if is_initialized() else None


def log_dist(message: str, ranks: Optional[Iterable[int]] = None, level: int = logging.INFO) -> None:
    """Log ``message`` at ``level`` on ``logger`` from the ranks in ``ranks`` (module docstring). TypeError
    when ``ranks`` holds something that is not an int."""
    wanted = list(ranks or [])
    if any(isinstance(r, bool) or not isinstance(r, int) for r in wanted):
        raise TypeError(f"log_dist(ranks=...) takes a list of integer ranks ([-1]: every rank), got {ranks!r}")
    rank = _rank()
    if rank is None or (wanted and (wanted[0] == -1 or rank in wanted)):
        logger.log(level, "[Rank %d] %s", -1 if rank is None else rank, message)
