"""The ``accelops`` section: settings of accelops' own engine that DeepSpeed has no key for.

DeepSpeed reads its top-level config keys one by one and ignores the others, so a config with an
``"accelops"`` section still works under DeepSpeed (inside DeepSpeed's own sections, unknown keys are
errors there, which is why accelops' settings live in a section of their own).

``fsdp_units`` (ZeRO stages 1 to 3): which modules become FSDP2 units (``fully_shard`` calls) below the
root, which is always a unit for whatever parameters remain:

* ``"auto"`` (default): the classes the model names in ``_no_split_modules`` (the Hugging Face
  convention for "one transformer block") when it has that attribute, else ``"children"``;
* ``"children"``: every child of the model that holds parameters, with ``ModuleList``/``ModuleDict``
  children opened so that their items become units;
* ``"root"``: no unit below the root (the whole model is one unit: fewest collectives, no memory saved
  by gathering one block at a time);
* a list of class names: every submodule of one of those classes.

``pipeline_schedule`` (a ``PipelineModule``): the ``torch.distributed.pipelining`` schedule of a batch,
``"1f1b"`` (default; DeepSpeed's own schedule is one-forward-one-backward) or ``"gpipe"`` (all forwards,
then all backwards: more activation memory).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple, Union

from ._checks import got
from ._keys import Key, read_section, used
from .errors import ConfigError

UNIT_RULES = ("auto", "children", "root")
PIPELINE_SCHEDULES = ("1f1b", "gpipe")


def _units(path: str, value: Any) -> Union[str, Tuple[str, ...]]:
    if isinstance(value, str) and value in UNIT_RULES:
        return value
    if isinstance(value, list) and value and all(isinstance(item, str) and item for item in value):
        return tuple(value)
    raise ConfigError(path, f"must be one of {', '.join(map(repr, UNIT_RULES))} or a non-empty list of module class "
                      f"names, {got(value)}")


def _schedule(path: str, value: Any) -> str:
    if isinstance(value, str) and value.lower() in PIPELINE_SCHEDULES:
        return value.lower()
    raise ConfigError(path, f"must be one of {', '.join(map(repr, PIPELINE_SCHEDULES))}, {got(value)}")


ACCELOPS_KEYS: Dict[str, Key] = {"fsdp_units": used(_units), "pipeline_schedule": used(_schedule)}


@dataclass(frozen=True)
class AccelopsConfig:
    """accelops-only engine settings (module docstring)."""
    fsdp_units: Union[str, Tuple[str, ...]] = "auto"
    pipeline_schedule: str = "1f1b"


def parse_accelops(value: Any, no_effect_paths: List[str]) -> AccelopsConfig:
    """The ``accelops`` section (absent: the defaults)."""
    if value is None:
        return AccelopsConfig()
    found = read_section("accelops", value, ACCELOPS_KEYS, no_effect_paths)
    return AccelopsConfig(**found)
