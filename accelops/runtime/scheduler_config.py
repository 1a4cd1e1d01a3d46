"""The ``scheduler`` section: ``type`` and the ``params`` of DeepSpeed's five LR schedules.

DeepSpeed facts (deepspeed/runtime/lr_schedules.py): the params are the schedule constructors' keyword
arguments (``warmup_min_lr``, ``warmup_max_lr``, ``warmup_num_steps``, ``warmup_type``, ``total_num_steps``,
``warmup_min_ratio``, ``cos_min_ratio``, ``cycle_*``, ``decay_*``, ``lr_range_test_*``,
``last_batch_iteration``); ``total_num_steps`` (WarmupDecayLR, WarmupCosineLR) and ``cycle_min_lr`` /
``cycle_max_lr`` (OneCycle) have no default. DeepSpeed also accepts ``torch.optim.lr_scheduler`` class
names here; accelops does not (build that scheduler yourself and pass it to ``initialize``).

Only given params are kept; defaults live in :mod:`accelops.runtime.lr_schedules`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ._checks import boolean, integer, number, number_or_list, one_of, optional
from ._frozen import FrozenDict
from ._keys import Key, closest, read_section, used
from .errors import ConfigError

_LRS = used(number_or_list(0))
_STEPS = used(integer(1))
_WARMUP_TYPE = used(one_of("log", "linear"))
_LAST = used(integer(-1))
_RATIO = used(number(0))

SCHEDULERS: Dict[str, Dict[str, Key]] = {
    "WarmupLR": {"warmup_min_lr": _LRS, "warmup_max_lr": used(optional(number_or_list(0))),
                 "warmup_num_steps": _STEPS, "warmup_type": _WARMUP_TYPE, "last_batch_iteration": _LAST},
    "WarmupDecayLR": {"total_num_steps": used(integer(1), required=True), "warmup_min_lr": _LRS,
                      "warmup_max_lr": _LRS, "warmup_num_steps": _STEPS, "warmup_type": _WARMUP_TYPE,
                      "last_batch_iteration": _LAST},
    "WarmupCosineLR": {"total_num_steps": used(integer(1), required=True), "warmup_min_ratio": _RATIO,
                       "warmup_num_steps": _STEPS, "cos_min_ratio": _RATIO, "warmup_type": _WARMUP_TYPE,
                       "last_batch_iteration": _LAST},
    "OneCycle": {"cycle_min_lr": used(number_or_list(0), required=True),
                 "cycle_max_lr": used(number_or_list(0), required=True), "decay_lr_rate": _RATIO,
                 "cycle_first_step_size": used(number(0, above=True)),
                 "cycle_second_step_size": used(optional(number(0))),
                 "cycle_first_stair_count": used(integer(0)), "cycle_second_stair_count": used(optional(integer(0))),
                 "decay_step_size": _RATIO, "cycle_momentum": used(boolean), "cycle_min_mom": used(number_or_list(0)),
                 "cycle_max_mom": used(number_or_list(0)), "decay_mom_rate": used(number()),
                 "last_batch_iteration": _LAST},
    "LRRangeTest": {"lr_range_test_min_lr": _LRS, "lr_range_test_step_size": _STEPS,
                    "lr_range_test_step_rate": _RATIO, "lr_range_test_staircase": used(boolean),
                    "last_batch_iteration": _LAST},
}

SECTION_KEYS: Dict[str, Key] = {"type": used(lambda path, v: v, required=True), "params": used(lambda path, v: v)}


@dataclass(frozen=True)
class SchedulerConfig:
    """An LR schedule named in the config: ``type`` (canonical spelling) and the given ``params``
    (read-only; lists of per-group values are tuples)."""
    type: str
    params: FrozenDict = field(default_factory=FrozenDict)


def _type(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError("scheduler.type", f"must be a string such as 'WarmupLR', got {value!r}")
    by_lower = {name.lower(): name for name in SCHEDULERS}
    if value.lower() in by_lower:
        return by_lower[value.lower()]
    near = by_lower[closest(value.lower(), by_lower)]
    raise ConfigError("scheduler.type", f"{value!r} is not a supported schedule (closest: {near!r}); supported: "
                      f"{', '.join(SCHEDULERS)}. DeepSpeed also takes torch.optim.lr_scheduler names; with "
                      f"accelops build such a scheduler yourself and pass lr_scheduler= to initialize()")


def _params(section: Dict[str, Any]) -> Any:
    return {} if section.get("params") is None else section["params"]


def parse_scheduler(value: Any, no_effect_paths: List[str]) -> Optional[SchedulerConfig]:
    """The ``scheduler`` section as a :class:`SchedulerConfig`, or None when absent."""
    if value is None:
        return None
    section = read_section("scheduler", value, SECTION_KEYS, no_effect_paths)
    kind = _type(section["type"])
    params = read_section("scheduler.params", _params(section), SCHEDULERS[kind], no_effect_paths)
    return SchedulerConfig(kind, FrozenDict(params))
