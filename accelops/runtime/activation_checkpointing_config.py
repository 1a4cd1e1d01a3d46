"""The ``activation_checkpointing`` section (no torch).

DeepSpeed 0.19 facts followed (deepspeed/runtime/activation_checkpointing/config.py), keys and defaults:
``partition_activations`` (false), ``contiguous_memory_optimization`` (false), ``cpu_checkpointing``
(false), ``number_checkpoints`` (null), ``synchronize_checkpoint_boundary`` (false) and ``profile``
(false). DeepSpeed's engine only stores the section; it takes effect when the script calls
``deepspeed.checkpointing.configure(mpu, deepspeed_config=...)``, and explicit arguments of that call win
over the section. The same holds here (:mod:`accelops.runtime.activation_checkpointing.checkpointing`),
which also says what each key does without model parallelism.

DeepSpeed reads these keys unchecked; here a wrong type or range, or an unknown key, is a
:class:`ConfigError` naming the key. Combinations (``contiguous_memory_optimization`` needs
``partition_activations`` and ``number_checkpoints``) are checked by ``configure``, after its arguments
have been applied, as in DeepSpeed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ._checks import boolean, integer, optional
from ._keys import Key, read_section, used

ACTIVATION_CHECKPOINTING_KEYS: Dict[str, Key] = {
    "partition_activations": used(boolean),
    "contiguous_memory_optimization": used(boolean),
    "cpu_checkpointing": used(boolean),
    "number_checkpoints": used(optional(integer(1))),
    "synchronize_checkpoint_boundary": used(boolean),
    "profile": used(boolean),
}


@dataclass(frozen=True)
class ActivationCheckpointingConfig:
    """``activation_checkpointing``: read by ``deepspeed.checkpointing.configure(mpu, deepspeed_config=...)``."""
    partition_activations: bool = False
    contiguous_memory_optimization: bool = False
    cpu_checkpointing: bool = False
    number_checkpoints: Optional[int] = None
    synchronize_checkpoint_boundary: bool = False
    profile: bool = False


def parse_activation_checkpointing(value: Any, no_effect_paths: List[str]) -> ActivationCheckpointingConfig:
    """The ``activation_checkpointing`` section ``value`` (None when absent: the defaults). Raises
    :class:`ConfigError` naming the key path for an unknown key or a bad value."""
    if value is None:
        return ActivationCheckpointingConfig()
    return ActivationCheckpointingConfig(**read_section("activation_checkpointing", value,
                                                        ACTIVATION_CHECKPOINTING_KEYS, no_effect_paths))
