"""``tensorboard``: scalars through ``torch.utils.tensorboard.SummaryWriter`` (DeepSpeed's
``TensorBoardMonitor``): log folder ``output_path/job_name``, ``add_scalar(name, value, step)`` per event,
flushed after every ``write_events`` call. Needs the ``tensorboard`` package."""
from __future__ import annotations

import os
from typing import Any, Sequence

from .base import Event, Monitor, scalar
from .utils import require


class TensorBoardMonitor(Monitor):
    """One SummaryWriter on ``<output_path>/<job_name>`` (made at once; ImportError naming
    ``pip install tensorboard`` when the package is missing)."""

    def __init__(self, tensorboard_config: Any):
        super().__init__(tensorboard_config)
        self.output_path = tensorboard_config.output_path
        self.job_name = tensorboard_config.job_name
        self.summary_writer = None
        if self.enabled:
            require("tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            log_dir = os.path.join(self.output_path, self.job_name)
            os.makedirs(log_dir, exist_ok=True)
            self.summary_writer = SummaryWriter(log_dir=log_dir)

    def get_summary_writer(self) -> Any:
        """The SummaryWriter (None while disabled), for client code that logs more (DeepSpeed's name)."""
        return self.summary_writer

    def write_events(self, event_list: Sequence[Event], flush: bool = True) -> None:
        """``add_scalar`` every event, then flush (unless ``flush`` is false)."""
        if self.summary_writer is None:
            return
        for name, value, step in event_list:
            self.summary_writer.add_scalar(name, scalar(value), scalar(step))
        if flush:
            self.summary_writer.flush()

    def flush(self) -> None:
        if self.summary_writer is not None:
            self.summary_writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.summary_writer is not None:
            self.summary_writer.close()
