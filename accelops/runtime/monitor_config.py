"""The monitor sections: ``tensorboard``, ``csv_monitor``, ``wandb`` and ``comet`` (no torch).

DeepSpeed 0.19 facts followed (deepspeed/monitor/config.py), keys and defaults:

* ``tensorboard`` and ``csv_monitor``: ``enabled`` (false), ``output_path`` (``""``: the job folder is then
  relative to the working directory) and ``job_name`` (``"DeepSpeedJobName"``); events go under
  ``output_path/job_name/``.
* ``wandb``: ``enabled``, ``group`` (null), ``team`` (null, wandb's ``entity``), ``project``
  (``"deepspeed"``).
* ``comet``: ``enabled``, ``samples_log_interval`` (100: an event name is sent again only once that many
  samples have passed since it was last sent), ``project``, ``workspace``, ``api_key``,
  ``experiment_name``, ``experiment_key``, ``online`` and ``mode`` (all null: comet_ml's own config or
  environment decides).

Unknown keys are errors naming the closest known key (DeepSpeed's pydantic models forbid them too). The
writers are in :mod:`accelops.monitor`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ._checks import boolean, got, integer, one_of, optional
from ._keys import Key, read_section, used
from .errors import ConfigError

SECTIONS = ("tensorboard", "csv_monitor", "wandb", "comet")


def _text(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, {got(value)}")
    return value


def _name(path: str, value: Any) -> str:
    """A non-empty string that can be one folder name (``job_name``)."""
    if not isinstance(value, str) or not value.strip() or "/" in value or "\\" in value or value in (".", ".."):
        raise ConfigError(path, f"must be a non-empty folder name (no '/' or '\\'), {got(value)}")
    return value


def _experiment_key(path: str, value: Any) -> str:
    """comet's rule: alphanumeric, 32 to 50 characters."""
    if not isinstance(value, str) or not value.isalnum() or not value.isascii() or not 32 <= len(value) <= 50:
        raise ConfigError(path, f"must be an alphanumeric string of 32 to 50 characters (comet's experiment key), "
                          f"{got(value)}")
    return value


_FOLDER_KEYS = {"enabled": used(boolean), "output_path": used(_text), "job_name": used(_name)}
TENSORBOARD_KEYS: Dict[str, Key] = dict(_FOLDER_KEYS)
CSV_MONITOR_KEYS: Dict[str, Key] = dict(_FOLDER_KEYS)
WANDB_KEYS: Dict[str, Key] = {"enabled": used(boolean), "group": used(optional(_text)), "team": used(optional(_text)),
                              "project": used(_text)}
COMET_KEYS: Dict[str, Key] = {
    "enabled": used(boolean), "samples_log_interval": used(integer(1)),
    **{name: used(optional(_text)) for name in ("project", "workspace", "api_key", "experiment_name")},
    "experiment_key": used(optional(_experiment_key)), "online": used(optional(boolean)),
    "mode": used(optional(one_of("get", "create", "get_or_create"))),
}


@dataclass(frozen=True)
class TensorBoardConfig:
    """``tensorboard``: event files under ``output_path/job_name/`` (torch's SummaryWriter)."""
    enabled: bool = False
    output_path: str = ""
    job_name: str = "DeepSpeedJobName"


@dataclass(frozen=True)
class CSVConfig:
    """``csv_monitor``: one CSV file per event name under ``output_path/job_name/``."""
    enabled: bool = False
    output_path: str = ""
    job_name: str = "DeepSpeedJobName"


@dataclass(frozen=True)
class WandbConfig:
    """``wandb``: ``wandb.init(project=project, group=group, entity=team)``."""
    enabled: bool = False
    group: Optional[str] = None
    team: Optional[str] = None
    project: str = "deepspeed"


@dataclass(frozen=True)
class CometConfig:
    """``comet``: ``comet_ml.start(...)`` with these keys; metrics every ``samples_log_interval`` samples."""
    enabled: bool = False
    samples_log_interval: int = 100
    project: Optional[str] = None
    workspace: Optional[str] = None
    api_key: Optional[str] = field(default=None, repr=False)
    experiment_name: Optional[str] = None
    experiment_key: Optional[str] = None
    online: Optional[bool] = None
    mode: Optional[str] = None


@dataclass(frozen=True)
class MonitorConfig:
    """The four monitor sections; ``enabled`` is true when any of them is (DeepSpeed's
    ``DeepSpeedMonitorConfig.enabled``)."""
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    csv_monitor: CSVConfig = field(default_factory=CSVConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    comet: CometConfig = field(default_factory=CometConfig)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name).enabled for name in SECTIONS)


_TABLES = {"tensorboard": (TENSORBOARD_KEYS, TensorBoardConfig), "csv_monitor": (CSV_MONITOR_KEYS, CSVConfig),
           "wandb": (WANDB_KEYS, WandbConfig), "comet": (COMET_KEYS, CometConfig)}


def parse_monitor(raw: Dict[str, Any], no_effect_paths: List[str]) -> MonitorConfig:
    """The monitor sections of the whole config ``raw`` (an absent section: its defaults). Raises
    :class:`ConfigError` naming the key path for an unknown key or a bad value."""
    sections = {}
    for name in SECTIONS:
        table, kind = _TABLES[name]
        value = raw.get(name)
        sections[name] = kind() if value is None else kind(**read_section(name, value, table, no_effect_paths))
    return MonitorConfig(**sections)
