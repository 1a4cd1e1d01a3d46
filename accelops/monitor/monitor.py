"""``MonitorMaster``: DeepSpeed's fan-out of events to every enabled writer (``Monitor`` is in
:mod:`accelops.monitor.base`, re-exported here under DeepSpeed's module name)."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

from .base import Event, Monitor, check_events
from .utils import require

__all__ = ["Monitor", "MonitorMaster"]


class MonitorMaster(Monitor):
    """Every enabled monitor of a :class:`~accelops.runtime.monitor_config.MonitorConfig`.

    ``enabled`` is true when any section is enabled (on every rank, as in DeepSpeed). On every rank the
    packages of the enabled sections are checked first (ImportError naming the ``pip install``); the writers
    are made on rank 0 only (``rank`` defaults to the process group's rank, 0 without one): folders are
    created, ``wandb.init`` / ``comet_ml.start`` called. :meth:`write_events` writes on rank 0 and does
    nothing elsewhere.
    """

    def __init__(self, monitor_config: Any, rank: Optional[int] = None):
        super().__init__(monitor_config)
        if rank is None:
            from accelops.comm import get_rank

            rank = get_rank()
        self.rank = rank
        self.tb_monitor = self.wandb_monitor = self.csv_monitor = self.comet_monitor = None
        for section in ("tensorboard", "wandb", "comet"):
            if getattr(monitor_config, section).enabled:
                require(section)
        if self.rank != 0:
            return
        if monitor_config.tensorboard.enabled:
            from .tensorboard import TensorBoardMonitor

            self.tb_monitor = TensorBoardMonitor(monitor_config.tensorboard)
        if monitor_config.wandb.enabled:
            from .wandb import WandbMonitor

            self.wandb_monitor = WandbMonitor(monitor_config.wandb)
        if monitor_config.csv_monitor.enabled:
            from .csv_monitor import csvMonitor

            self.csv_monitor = csvMonitor(monitor_config.csv_monitor)
        if monitor_config.comet.enabled:
            from .comet import CometMonitor

            self.comet_monitor = CometMonitor(monitor_config.comet)

    @property
    def monitors(self) -> Tuple[Monitor, ...]:
        """The writers this process holds (none off rank 0)."""
        return tuple(m for m in (self.tb_monitor, self.wandb_monitor, self.csv_monitor, self.comet_monitor) if m)

    def write_events(self, event_list: Sequence[Event]) -> None:
        """Hand ``event_list`` (``(name, value, step)`` tuples) to every writer (rank 0 only; a TypeError
        for a malformed list on every rank)."""
        events = check_events(event_list)
        for monitor in self.monitors:
            monitor.write_events(events)

    def close(self) -> None:
        """Flush and close what the writers hold open (the tensorboard event file)."""
        for monitor in self.monitors:
            close = getattr(monitor, "close", None)
            if callable(close):
                close()
