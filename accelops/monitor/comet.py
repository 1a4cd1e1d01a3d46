"""``comet`` (DeepSpeed's ``CometMonitor``): ``comet_ml.start(api_key, project, workspace, experiment_key,
mode, online)`` when made, ``experiment.set_name(experiment_name)`` when one is given; an event is sent
(``log_metric`` with the sample count as step) the first time its name is seen and then only once
``samples_log_interval`` samples have passed since that name was last sent. Needs ``comet_ml>=3.41.0``."""
from __future__ import annotations

from typing import Any, Dict, Sequence

from .base import Event, Monitor, scalar
from .utils import require


class EventsLogScheduler:
    """Which events to send: per name, the first one, then one every ``samples_log_interval`` samples."""

    def __init__(self, samples_log_interval: int):
        self.samples_log_interval = samples_log_interval
        self._last: Dict[str, int] = {}

    def needs_logging(self, name: str, current_sample: int) -> bool:
        """True (and remembered) when ``name`` at ``current_sample`` is due."""
        last = self._last.get(name)
        if last is None or current_sample - last >= self.samples_log_interval:
            self._last[name] = current_sample
            return True
        return False


class CometMonitor(Monitor):
    """Starts a comet experiment when enabled (ImportError naming the ``pip install`` when missing)."""

    def __init__(self, comet_config: Any):
        super().__init__(comet_config)
        self.samples_log_interval = comet_config.samples_log_interval
        self.experiment = None
        self._scheduler = EventsLogScheduler(comet_config.samples_log_interval)
        if self.enabled:
            require("comet")
            import comet_ml

            self.experiment = comet_ml.start(api_key=comet_config.api_key, project=comet_config.project,
                                             workspace=comet_config.workspace,
                                             experiment_key=comet_config.experiment_key, mode=comet_config.mode,
                                             online=comet_config.online)
            if comet_config.experiment_name is not None:
                self.experiment.set_name(comet_config.experiment_name)

    def write_events(self, event_list: Sequence[Event]) -> None:
        """Send each due event (class docstring) to the experiment."""
        if self.experiment is None:
            return
        log_metric = getattr(self.experiment, "__internal_api__log_metric__", None) or self.experiment.log_metric
        for name, value, step in event_list:
            step = scalar(step)
            if self._scheduler.needs_logging(name, step):
                log_metric(name=name, value=scalar(value), step=step)
