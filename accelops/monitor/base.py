"""The writers' base class ``Monitor`` and the event helpers they share."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterable, Sequence, Tuple

Event = Tuple[str, Any, int]


def check_events(event_list: Any) -> Sequence[Event]:
    """``event_list`` as a list of ``(name, value, step)``; TypeError naming the bad entry otherwise."""
    if isinstance(event_list, (str, bytes)) or not isinstance(event_list, Iterable):
        raise TypeError(f"write_events takes a list of (name, value, step) tuples, got a {type(event_list).__name__}")
    events = list(event_list)
    for index, event in enumerate(events):
        if not isinstance(event, (tuple, list)) or len(event) != 3 or not isinstance(event[0], str):
            raise TypeError(f"write_events: entry {index} must be a (name: str, value, step: int) tuple, got {event!r}")
    return events


def scalar(value: Any) -> Any:
    """A one-element tensor or numpy scalar as a Python number; anything else unchanged."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class Monitor(ABC):
    """A writer of ``(name, value, step)`` events for one config section (DeepSpeed's base class)."""

    def __init__(self, monitor_config: Any):
        self.monitor_config = monitor_config
        self.enabled = bool(getattr(monitor_config, "enabled", False))

    @abstractmethod
    def write_events(self, event_list: Sequence[Event]) -> None:
        """Write every ``(name, value, step)`` of ``event_list``."""
