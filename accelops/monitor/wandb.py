"""``wandb`` (DeepSpeed's ``WandbMonitor``): ``wandb.init(project=project, group=group, entity=team)`` when
made, then ``wandb.log({name: value}, step=step)`` per event. Needs the ``wandb`` package."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from .base import Event, Monitor, scalar
from .utils import require


class WandbMonitor(Monitor):
    """Starts a wandb run when enabled (ImportError naming ``pip install wandb`` when it is missing)."""

    def __init__(self, wandb_config: Any):
        super().__init__(wandb_config)
        self.group, self.team, self.project = wandb_config.group, wandb_config.team, wandb_config.project
        if self.enabled:
            require("wandb")
            import wandb

            wandb.init(project=self.project, group=self.group, entity=self.team)

    def log(self, data: dict, step: Optional[int] = None, commit: Optional[bool] = None) -> Any:
        """``wandb.log(data, step=step, commit=commit)`` (DeepSpeed's method)."""
        if self.enabled:
            import wandb

            return wandb.log(data, step=step, commit=commit)
        return None

    def write_events(self, event_list: Sequence[Event]) -> None:
        """One ``wandb.log({name: value}, step=step)`` per event."""
        for name, value, step in event_list:
            self.log({name: scalar(value)}, step=scalar(step))
