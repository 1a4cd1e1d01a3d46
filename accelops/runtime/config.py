"""``load_config``: a DeepSpeed JSON config (a path or a dict) read strictly into frozen dataclasses.

Differences from DeepSpeed, all on purpose: an unknown key is an error naming the closest known key
(DeepSpeed ignores typos); ``"auto"`` is an error (the Hugging Face integration fills it in); keys that only
tune DeepSpeed's implementation are accepted and listed in ``EngineConfig.no_effect``; DeepSpeed features
accelops lacks are errors while turned on. The section modules (``optimizer_config``, ``scheduler_config``,
``precision_config``, ``zero_config``, ``monitor_config``, ``profiler_config``, ``activation_checkpointing_config``,
``batch``) state the DeepSpeed facts they follow.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .accelops_config import AccelopsConfig, parse_accelops
from .activation_checkpointing_config import ActivationCheckpointingConfig, parse_activation_checkpointing
from ._checks import boolean, integer, number, one_of, optional
from ._keys import Key, no_effect, read_section, unsupported, used
from .batch import resolve_batch
from .errors import ConfigError
from .monitor_config import MonitorConfig, parse_monitor
from .optimizer_config import OptimizerConfig, parse_optimizer
from .precision_config import BF16Config, FP16Config, parse_bf16, parse_fp16
from .profiler_config import FlopsProfilerConfig, parse_flops_profiler
from .scheduler_config import SchedulerConfig, parse_scheduler
from .zero_config import ZeroConfig, parse_zero

_SECTION = used(lambda path, value: value)  # parsed by its own module below
_POSITIVE = used(optional(integer(1)))

TOP_LEVEL_KEYS: Dict[str, Key] = {
    "train_batch_size": _POSITIVE, "train_micro_batch_size_per_gpu": _POSITIVE,
    "gradient_accumulation_steps": _POSITIVE,
    "optimizer": _SECTION, "scheduler": _SECTION, "fp16": _SECTION, "bf16": _SECTION, "bfloat16": _SECTION,
    "zero_optimization": _SECTION, "accelops": _SECTION,
    "tensorboard": _SECTION, "csv_monitor": _SECTION, "wandb": _SECTION, "comet": _SECTION,
    "flops_profiler": _SECTION, "activation_checkpointing": _SECTION,
    "gradient_clipping": used(number(0)),
    "steps_per_print": _POSITIVE,
    "wall_clock_breakdown": used(boolean),
    "dataloader_drop_last": used(boolean),
    "communication_data_type": used(optional(one_of("fp32", "fp16", "bf16", lower=True))),
    # tuning of DeepSpeed's implementation, or input to DeepSpeed tools accelops lacks
    **{name: no_effect(boolean) for name in (
        "prescale_gradients", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "memory_breakdown",
        "dump_state", "disable_allgather", "graph_harvesting")},
    "gradient_predivide_factor": no_effect(number(0, above=True)),
    "allgather_size": no_effect(number(0)),
    "vocabulary_size": no_effect(optional(integer(0))),
    **{name: no_effect() for name in (
        "log_level", "seq_parallel_communication_data_type", "comms_logger", "timers", "autotuning", "checkpoint",
        "aio", "nebula", "datastates")},
    # DeepSpeed features accelops does not implement (fine while off)
    "amp": unsupported("Apex AMP; use fp16 or bf16"),
    "torch_autocast": unsupported("torch autocast inside the engine"),
    "sparse_attention": unsupported("sparse attention"),
    "pipeline": unsupported("pipeline parallelism"),
    "elasticity": unsupported("elastic training"),
    "compression_training": unsupported("compression training"),
    "data_efficiency": unsupported("data efficiency"),
    "curriculum_learning": unsupported("curriculum learning"),
    "progressive_layer_drop": unsupported("progressive layer drop"),
    "eigenvalue": unsupported("eigenvalue computation"),
    "quantize_training": unsupported("MoQ quantized training"),
    "hybrid_engine": unsupported("the hybrid (RLHF) engine"),
    "sequence_parallel_size": unsupported("sequence parallelism", inert=(None, 1)),
    "tensor_parallel": unsupported("automatic tensor parallelism"),
    "expert_parallel": unsupported("expert parallelism"),
    "use_data_before_expert_parallelism": unsupported("expert parallelism"),
    "weight_quantization": unsupported("weight quantization"),
    "compile": unsupported("DeepCompile"),
    "sparse_gradients": unsupported("sparse (CSR) gradients"),
    "data_types": unsupported("data_types (grad_accum_dtype etc.); accelops accumulates gradients in fp32"),
    "managed_gradient_accumulation": unsupported("client-managed accumulation boundaries", inert=(None, True)),
    "gradient_allreduce_op": unsupported("gradient_allreduce_op 'sum'; gradients are averaged",
                                         inert=(None, "mean")),
}


@dataclass(frozen=True)
class EngineConfig:
    """A checked DeepSpeed config for a given data-parallel ``world_size``.

    The batch triple is complete and consistent. ``optimizer`` / ``scheduler`` are None when the config
    names none. ``no_effect`` lists the key paths that were accepted but change nothing here (for the
    engine to report once). ``source_json`` is the config as read, as JSON text.
    """
    train_batch_size: int
    train_micro_batch_size_per_gpu: int
    gradient_accumulation_steps: int
    world_size: int
    optimizer: Optional[OptimizerConfig] = None
    scheduler: Optional[SchedulerConfig] = None
    fp16: FP16Config = field(default_factory=FP16Config)
    bf16: BF16Config = field(default_factory=BF16Config)
    zero: ZeroConfig = field(default_factory=ZeroConfig)
    gradient_clipping: float = 0.0
    steps_per_print: Optional[int] = None
    wall_clock_breakdown: bool = False
    dataloader_drop_last: bool = False
    communication_data_type: Optional[str] = None
    accelops: AccelopsConfig = field(default_factory=AccelopsConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    flops_profiler: FlopsProfilerConfig = field(default_factory=FlopsProfilerConfig)
    activation_checkpointing: ActivationCheckpointingConfig = field(default_factory=ActivationCheckpointingConfig)
    no_effect: Tuple[str, ...] = ()
    source_json: str = "{}"

    @property
    def zero_optimization_stage(self) -> int:
        return self.zero.stage

    @property
    def precision(self) -> str:
        """"fp16", "bf16" or "fp32": the dtype the model computes in."""
        return "fp16" if self.fp16.enabled else "bf16" if self.bf16.enabled else "fp32"


def _read(config: Union[str, os.PathLike, dict]) -> dict:
    """The config as a dict: a dict as given, a JSON file, or (as DeepSpeed allows) base64 of JSON text."""
    if isinstance(config, dict):
        return config
    if not isinstance(config, (str, os.PathLike)):
        raise ConfigError("", f"the config must be a dict or the path of a JSON file, got a {type(config).__name__}")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as handle:
                return json.load(handle, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as error:
            raise ConfigError("", f"the config file {os.fspath(config)!r} is not valid JSON: {error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError("", f"the config file {os.fspath(config)!r} is not UTF-8 text (byte {error.start}: "
                                  f"{error.reason}); a DeepSpeed config is JSON in UTF-8") from None
    try:
        text = base64.urlsafe_b64decode(os.fspath(config)).decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise ConfigError("", f"the config {os.fspath(config)!r} is not an existing file (nor base64-encoded JSON, "
                          f"which DeepSpeed also accepts)") from None


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise ConfigError(key, "appears twice in one object of the config file")
        result[key] = value
    return result


def _refuse_auto(path: str, value: Any) -> None:
    """Raise on the first ``"auto"`` anywhere in the config."""
    if isinstance(value, str) and value == "auto":
        raise ConfigError(path, 'is "auto": "auto" values are filled in by the Hugging Face Trainer / Accelerate '
                          'DeepSpeed integration before the engine starts, not by the engine; give a value here')
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_auto(f"{path}.{key}" if path else str(key), item)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _refuse_auto(f"{path}[{index}]", item)


def load_config(config: Union[str, os.PathLike, dict], world_size: int) -> EngineConfig:
    """Read and check a DeepSpeed config for ``world_size`` data-parallel ranks.

    ``config``: a dict (not modified), a JSON file path, or base64-encoded JSON. Every problem raises
    :class:`ConfigError` naming the key path: unknown keys (with the closest known key), ``"auto"``, bad
    types or values, fp16 and bf16 both enabled, offload at a stage that cannot use it, and a batch
    triple that does not multiply out (showing the numbers).
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError("", f"world_size must be a positive integer, got {world_size!r}")
    raw = _read(config)
    _refuse_auto("", raw)
    no_effect_paths: List[str] = []
    top = read_section("", raw, TOP_LEVEL_KEYS, no_effect_paths)
    fp16 = parse_fp16(raw.get("fp16", {}), no_effect_paths)
    bf16 = parse_bf16(raw, no_effect_paths)
    if fp16.enabled and bf16.enabled:
        raise ConfigError("", "fp16.enabled and bf16.enabled are both true; enable at most one of them")
    optimizer = parse_optimizer(raw.get("optimizer"), no_effect_paths)
    scheduler = parse_scheduler(raw.get("scheduler"), no_effect_paths)
    zero = parse_zero(raw.get("zero_optimization"), no_effect_paths)
    own = parse_accelops(raw.get("accelops"), no_effect_paths)
    monitor = parse_monitor(raw, no_effect_paths)
    flops_profiler = parse_flops_profiler(raw.get("flops_profiler"), no_effect_paths)
    activation_checkpointing = parse_activation_checkpointing(raw.get("activation_checkpointing"), no_effect_paths)
    train, micro, accum = resolve_batch(top.get("train_batch_size"), top.get("train_micro_batch_size_per_gpu"),
                                        top.get("gradient_accumulation_steps"), world_size)
    return EngineConfig(
        train_batch_size=train, train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accum,
        world_size=world_size, optimizer=optimizer, scheduler=scheduler, fp16=fp16, bf16=bf16, zero=zero,
        gradient_clipping=float(top.get("gradient_clipping", 0.0)), steps_per_print=top.get("steps_per_print"),
        wall_clock_breakdown=top.get("wall_clock_breakdown", False),
        dataloader_drop_last=top.get("dataloader_drop_last", False),
        communication_data_type=top.get("communication_data_type"), accelops=own, monitor=monitor,
        flops_profiler=flops_profiler, activation_checkpointing=activation_checkpointing,
        no_effect=tuple(no_effect_paths),
        source_json=json.dumps(raw, sort_keys=True, default=repr))
