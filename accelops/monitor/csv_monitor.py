"""``csv_monitor``: one CSV file per event name (DeepSpeed's ``csvMonitor``).

DeepSpeed facts followed (deepspeed/monitor/csv_monitor.py): the folder is ``output_path/job_name``; the
file of an event is its name with ``/`` and spaces replaced by ``_``, plus ``.csv``
(``Train/Samples/lr`` -> ``Train_Samples_lr.csv``); its header row is ``step,<last part of the name>``
(``step,lr``), then one ``step,value`` row per event, appended. Difference, on purpose: DeepSpeed writes the
header again whenever a new process appends to an existing file (a resumed job gets a header row in the
middle of its data); here the header is written only into an empty file.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Sequence

from .base import Event, Monitor, scalar


def file_name(event_name: str) -> str:
    """The CSV file name of an event (``Train/Samples/lr`` -> ``Train_Samples_lr.csv``)."""
    return event_name.replace("/", "_").replace(" ", "_") + ".csv"


class csvMonitor(Monitor):  # noqa: N801 (DeepSpeed's name)
    """Appends events to ``<output_path>/<job_name>/<event file>.csv``; creates the folder at once."""

    def __init__(self, csv_config: Any):
        super().__init__(csv_config)
        self.output_path = csv_config.output_path
        self.job_name = csv_config.job_name
        self.log_dir = os.path.join(self.output_path, self.job_name)
        self.filenames = []  # the files this writer has written to, without .csv (DeepSpeed's attribute)
        if self.enabled:
            os.makedirs(self.log_dir, exist_ok=True)

    def write_events(self, event_list: Sequence[Event]) -> None:
        """Append one ``step,value`` row per event (the header first into a new or empty file)."""
        if not self.enabled:
            return
        for name, value, step in event_list:
            filename = file_name(name)[:-len(".csv")]
            path = os.path.join(self.log_dir, filename + ".csv")
            with open(path, "a", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                if handle.tell() == 0:
                    writer.writerow(["step", name.split("/")[-1]])
                writer.writerow([scalar(step), scalar(value)])
            if filename not in self.filenames:
                self.filenames.append(filename)
