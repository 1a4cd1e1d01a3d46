"""The ``flops_profiler`` section (no torch).

DeepSpeed 0.19 facts followed (deepspeed/profiling/constants.py and config.py), keys and defaults:
``enabled`` (false), ``recompute_fwd_factor`` (0.0: the share of the forward pass that activation
checkpointing runs again in backward; the backward estimate is ``2 + recompute_fwd_factor`` times the
forward FLOPs), ``profile_step`` (1: the value of ``global_steps`` at which rank 0 profiles),
``module_depth`` (-1: every depth of the aggregated profile), ``top_modules`` (1: how many module classes
per depth the aggregated profile names), ``detailed`` (true: print the module tree) and ``output_file``
(null: print to stdout; DeepSpeed treats ``""`` as null too, so it is read as null here).

DeepSpeed reads these keys unchecked; here a wrong type or range, or an unknown key, is a
:class:`ConfigError` naming the key. The profiler itself is :mod:`accelops.profiling.flops_profiler`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ._checks import boolean, got, integer, number, optional
from ._keys import Key, read_section, used
from .errors import ConfigError


def _file(path: str, value: Any) -> Optional[str]:
    """A file path as a string; ``""`` means stdout (None), as in DeepSpeed."""
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a file path (a string) or null, {got(value)}")
    return value or None


FLOPS_PROFILER_KEYS: Dict[str, Key] = {
    "enabled": used(boolean),
    "recompute_fwd_factor": used(lambda path, value: float(number(0)(path, value))),
    "profile_step": used(integer(0)),
    "module_depth": used(integer(-1)),
    "top_modules": used(integer(1)),
    "detailed": used(boolean),
    "output_file": used(optional(_file)),
}


@dataclass(frozen=True)
class FlopsProfilerConfig:
    """``flops_profiler``: when ``enabled``, rank 0 profiles the forward passes run while ``global_steps ==
    profile_step`` and prints the profile at the end of each ``step()`` of that global step."""
    enabled: bool = False
    recompute_fwd_factor: float = 0.0
    profile_step: int = 1
    module_depth: int = -1
    top_modules: int = 1
    detailed: bool = True
    output_file: Optional[str] = None


def parse_flops_profiler(value: Any, no_effect_paths: List[str]) -> FlopsProfilerConfig:
    """The ``flops_profiler`` section ``value`` (None when absent: the defaults). Raises
    :class:`ConfigError` naming the key path for an unknown key or a bad value."""
    if value is None:
        return FlopsProfilerConfig()
    return FlopsProfilerConfig(**read_section("flops_profiler", value, FLOPS_PROFILER_KEYS, no_effect_paths))
