"""The ``zero_optimization`` section: the ZeRO stage and CPU offload; DeepSpeed's tuning keys are accepted
and reported as having no effect.

DeepSpeed facts (deepspeed/runtime/zero/config.py, zero/offload_config.py): ``"zero_optimization": true``
is the deprecated form of stage 1 (false: stage 0); ``stage`` is 0 to 3, default 0; ``stage3_*`` keys are
aliases of the unprefixed field names; the deprecated ``cpu_offload`` / ``cpu_offload_param`` mean
``offload_optimizer`` / ``offload_param`` ``{"device": "cpu"}`` and may not be given together with them;
``cpu_offload_use_pin_memory`` only warns. Offload ``device`` is "none", "cpu" or "nvme" (default
"none"), ``pin_memory`` defaults to true; ``offload_param`` is used only at stage 3.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from ._checks import boolean, integer, mapping, number, one_of, optional
from ._keys import Key, alias, no_effect, read_section, unsupported, used
from .errors import ConfigError

_SIZE = number(0)
_CPU_ONLY = "accelops offloads to CPU memory only"

OFFLOAD_OPTIMIZER_KEYS: Dict[str, Key] = {
    "device": used(one_of("none", "cpu", "nvme", lower=True)),
    "pin_memory": used(boolean),
    "nvme_path": no_effect(), "buffer_count": no_effect(_SIZE), "pipeline_read": no_effect(boolean),
    "pipeline_write": no_effect(boolean), "fast_init": no_effect(boolean), "cpuadam_cores_perc": no_effect(_SIZE),
    "ratio": unsupported("partial optimizer offload", inert=(None, 1, 1.0)),
    "super_offload": unsupported("SuperOffload for Superchips"),
}

OFFLOAD_PARAM_KEYS: Dict[str, Key] = {
    "device": used(one_of("none", "cpu", "nvme", lower=True)),
    "pin_memory": used(boolean),
    "nvme_path": no_effect(), "buffer_count": no_effect(_SIZE), "buffer_size": no_effect(_SIZE),
    "max_in_cpu": no_effect(_SIZE),
}

_TUNING_BOOLS = ("contiguous_gradients", "reduce_scatter", "use_multi_rank_bucket_allreduce", "allgather_partitions",
                 "overlap_comm", "load_from_fp32_weights", "elastic_checkpoint", "ignore_unused_parameters",
                 "legacy_stage1", "round_robin_gradients", "memory_efficient_linear", "pipeline_loading_checkpoint",
                 "override_module_apply", "log_trace_cache_warnings", "enable_sanity_checks",
                 "save_muon_momentum_buffer_in_memory", "mics_hierarchical_params_gather",
                 "cpu_offload_use_pin_memory", "use_all_reduce_for_fetch_params", "allgather_sequential")
_TUNING_SIZES = ("reduce_bucket_size", "allgather_bucket_size", "sub_group_size", "prefetch_bucket_size",
                 "param_persistence_threshold", "model_persistence_threshold", "max_live_parameters",
                 "max_reuse_distance", "module_granularity_threshold")
_STAGE3_ALIASED = ("prefetch_bucket_size", "param_persistence_threshold", "model_persistence_threshold",
                   "max_live_parameters", "max_reuse_distance", "module_granularity_threshold",
                   "use_all_reduce_for_fetch_params", "allgather_sequential")

ZERO_KEYS: Dict[str, Key] = {
    "stage": used(integer(0, 3)),
    "offload_optimizer": used(optional(mapping)),
    "offload_param": used(optional(mapping)),
    "cpu_offload": used(optional(boolean)),
    "cpu_offload_param": used(optional(boolean)),
    "gather_16bit_weights_on_model_save": used(boolean),
    "stage3_gather_16bit_weights_on_model_save": alias("gather_16bit_weights_on_model_save", boolean),
    "stage3_gather_fp16_weights_on_model_save": alias("gather_16bit_weights_on_model_save", boolean),
    **{name: no_effect(optional(boolean)) for name in _TUNING_BOOLS},
    **{name: no_effect(_SIZE) for name in _TUNING_SIZES},
    **{f"stage3_{name}": no_effect(optional(boolean) if name in _TUNING_BOOLS else _SIZE)
       for name in _STAGE3_ALIASED},
    "leaf_module": no_effect(),
    "zenflow": unsupported("ZenFlow"),
    "zero_hpz_partition_size": unsupported("ZeRO++ hierarchical partitioning", inert=(None, 1)),
    "zero_quantized_weights": unsupported("ZeRO++ quantized weights"),
    "zero_quantized_nontrainable_weights": unsupported("ZeRO++ quantized non-trainable weights"),
    "zero_quantized_gradients": unsupported("ZeRO++ quantized gradients"),
    "zeropp_loco_param": unsupported("LoCo-ZeRO++"),
    "mics_shard_size": unsupported("MiCS sharding", inert=(None, -1)),
}


@dataclass(frozen=True)
class OffloadConfig:
    """Where ZeRO-Offload keeps optimizer state or parameters: ``device`` "none" or "cpu"."""
    device: str = "none"
    pin_memory: bool = True

    @property
    def enabled(self) -> bool:
        return self.device != "none"


@dataclass(frozen=True)
class ZeroConfig:
    """The ZeRO stage (0 to 3) and what is offloaded to the CPU."""
    stage: int = 0
    offload_optimizer: OffloadConfig = field(default_factory=OffloadConfig)
    offload_param: OffloadConfig = field(default_factory=OffloadConfig)
    gather_16bit_weights_on_model_save: bool = False


def _offload(path: str, value: Any, table: Dict[str, Key], no_effect_paths: List[str]) -> OffloadConfig:
    if value is None:
        return OffloadConfig()
    config = OffloadConfig(**read_section(path, value, table, no_effect_paths))
    if config.device == "nvme":
        raise ConfigError(f"{path}.device", f"is 'nvme', which accelops does not support ({_CPU_ONLY}); use 'cpu'")
    return config


def _deprecated(found: Dict[str, Any], old: str, new: str) -> Any:
    """The new-style offload section, or ``{"device": "cpu"}`` from the deprecated bool ``old``."""
    if found.get(old) is None:
        return found.get(new)
    if found.get(new) is not None:
        raise ConfigError(f"zero_optimization.{old}", f"(deprecated) and zero_optimization.{new} cannot be given "
                          f"together; keep {new}")
    return {"device": "cpu"} if found[old] else None


def parse_zero(value: Any, no_effect_paths: List[str]) -> ZeroConfig:
    """``zero_optimization``: absent -> stage 0, a bool -> stage 1 or 0 (DeepSpeed's deprecated form), or
    an object. Offload must suit the stage: ``offload_param`` needs stage 3, ``offload_optimizer`` 1 to 3
    (DeepSpeed silently ignores them otherwise; here that is an error)."""
    if value is None:
        return ZeroConfig()
    if isinstance(value, bool):
        return ZeroConfig(stage=1 if value else 0)
    found = read_section("zero_optimization", value, ZERO_KEYS, no_effect_paths)
    optimizer = _offload("zero_optimization.offload_optimizer",
                         _deprecated(found, "cpu_offload", "offload_optimizer"), OFFLOAD_OPTIMIZER_KEYS,
                         no_effect_paths)
    param = _offload("zero_optimization.offload_param", _deprecated(found, "cpu_offload_param", "offload_param"),
                     OFFLOAD_PARAM_KEYS, no_effect_paths)
    config = ZeroConfig(stage=found.get("stage", 0), offload_optimizer=optimizer, offload_param=param,
                        gather_16bit_weights_on_model_save=found.get("gather_16bit_weights_on_model_save", False))
    if config.offload_param.enabled and config.stage != 3:
        raise ConfigError("zero_optimization.offload_param", f"needs ZeRO stage 3, the stage is {config.stage}")
    if config.offload_optimizer.enabled and config.stage == 0:
        raise ConfigError("zero_optimization.offload_optimizer", "needs ZeRO stage 1, 2 or 3, the stage is 0")
    return config
