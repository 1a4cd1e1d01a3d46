"""``deepspeed.zero.Init``: build a model that never exists whole on one rank.

Inside the context every ``torch.nn.Module`` subclass's ``__init__`` is wrapped (classes defined inside
the context too, through ``Module.__init_subclass__``). When the outermost ``__init__`` of a module returns,
each of its parameters that is not yet partitioned is made a zero parameter
(:mod:`accelops.runtime.zero.zero_param`): rank 0's value is broadcast, every rank keeps its part, the full
tensor is freed. Parameters are created and initialised by the model's own code, in the model's own order,
so the random number generator is used exactly as in a plain construction: under the same seed the model
gets the same values (the engine then checks nothing else: its FSDP2 shards receive the parts as they are).
Peak memory while building: the parts made so far plus the largest module's own parameters.

DeepSpeed facts followed (deepspeed/runtime/zero/partition_parameters.py): rank 0's value wins
(broadcast before partitioning); ``Module.apply`` called inside the context gathers each module's own
parameters (``recurse=False``) around the function, then broadcasts rank 0's result and partitions again,
so a parent's ``self.apply(init_weights)`` initialises its children; a parameter changed any other way
after its module was partitioned (``nn.init.zeros_(self.child.weight)`` in a parent's ``__init__``) is
changed only on an empty tensor: use :class:`GatheredParameters` with ``modifier_rank=0`` for that, as
with DeepSpeed. ``torch.distributed`` is initialised when it is not (``accelops.comm.init_distributed``).

Differences, on purpose: parameters stay in fp32 whatever ``dtype`` or the config's fp16/bf16 section say
(accelops' fp32 master weights are the parameters; fp16/bf16 compute happens under autocast in the engine);
``mem_efficient_linear`` and ``tensor_overrides`` have no effect; partitions cover the whole world (the
engine's FSDP2 mesh), so ``data_parallel_group`` must span every rank.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, List, Optional

import torch

from ..._logging import get_logger
from .zero_param import (ZeroParamState, ZeroParamStatus, gather, is_zero_param, partition, release)

logger = get_logger(__name__)

_ORIGINAL = "_accelops_original_init"
_active: List["Init"] = []          # the entered contexts, innermost last
_init_depth: dict = {}              # id(module) -> how many of its __init__s are running
_saved_apply: Optional[Callable] = None
_saved_init_subclass: Any = None
_FP32_ONLY = (None, torch.float32, torch.float16, torch.bfloat16)


def _all_subclasses(cls: type) -> List[type]:
    found, todo = [], [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def _wrap_init(cls: type) -> None:
    init = cls.__dict__.get("__init__")
    if init is None or hasattr(init, _ORIGINAL):
        return

    @functools.wraps(init)
    def init_then_partition(module, *args, **kwargs):
        key = id(module)
        _init_depth[key] = _init_depth.get(key, 0) + 1
        try:
            init(module, *args, **kwargs)
        finally:
            _init_depth[key] -= 1
            outermost = _init_depth[key] == 0
            if outermost:
                del _init_depth[key]
        if outermost and _active:
            _active[-1]._partition_module(module)

    setattr(init_then_partition, _ORIGINAL, init)
    cls.__init__ = init_then_partition


def _unwrap_init(cls: type) -> None:
    init = cls.__dict__.get("__init__")
    if init is not None and hasattr(init, _ORIGINAL):
        cls.__init__ = getattr(init, _ORIGINAL)


def _gathering(fn: Callable) -> Callable:
    """``fn`` for ``Module.apply`` with each module's own zero parameters gathered around it; rank 0's
    result becomes everyone's (DeepSpeed's ``apply`` override)."""
    if getattr(fn, "_accelops_gathering", False):
        return fn

    @functools.wraps(fn)
    def gathered_fn(module):
        params = [p for p in module.parameters(recurse=False)
                  if is_zero_param(p) and p.ds_status == ZeroParamStatus.NOT_AVAILABLE]
        gather(params)
        try:
            fn(module)
        finally:
            release(params, modifier_rank=0)

    gathered_fn._accelops_gathering = True
    return gathered_fn


def _patch() -> None:
    global _saved_apply, _saved_init_subclass
    module_cls = torch.nn.Module
    for cls in [module_cls, *_all_subclasses(module_cls)]:
        _wrap_init(cls)
    _saved_init_subclass = module_cls.__dict__.get("__init_subclass__")

    def __init_subclass__(cls, **kwargs):
        super(module_cls, cls).__init_subclass__(**kwargs)
        _wrap_init(cls)

    module_cls.__init_subclass__ = classmethod(__init_subclass__)
    _saved_apply = module_cls.apply
    original_apply = _saved_apply

    def apply(self, fn):
        return original_apply(self, _gathering(fn))

    module_cls.apply = apply


def _unpatch() -> None:
    module_cls = torch.nn.Module
    for cls in [module_cls, *_all_subclasses(module_cls)]:
        _unwrap_init(cls)
    if _saved_init_subclass is None:
        del module_cls.__init_subclass__
    else:
        module_cls.__init_subclass__ = _saved_init_subclass
    module_cls.apply = _saved_apply


def _check_group(group: Any, dist: Any) -> Any:
    if group is None or group is dist.group.WORLD:
        return None
    if dist.get_world_size(group) != dist.get_world_size():
        raise ValueError(f"zero.Init(data_parallel_group=...): the group has {dist.get_world_size(group)} ranks of "
                         f"{dist.get_world_size()}; accelops partitions over every rank (the engine's FSDP2 mesh is "
                         f"the whole world), so pass None or a group of all ranks")
    return group


def _unsupported(**given: Any) -> None:
    for name, value in given.items():
        if value not in (None, False):
            raise ValueError(f"zero.Init({name}=...) is not supported by accelops (no ZeRO++, sequence parallelism, "
                             f"NVMe swapping or model parallelism); pass {name}=None")


class Init:
    """DeepSpeed's ``deepspeed.zero.Init`` (its signature; module docstring for what it does).

    ``module``: partition an already built module now (the context then partitions what is built inside
    it too). ``remote_device``: where the parts live, "cpu" or the accelerator's device (None: the config's
    ``offload_param`` device when it is "cpu", else the accelerator's current device); "nvme" is a
    ValueError. ``pin_memory``: pin CPU parts (when a CUDA runtime is there). ``config_dict_or_path`` (or
    the deprecated ``config``) is read as :func:`accelops.initialize` reads it (ConfigError when it is
    invalid). ``enabled=False``: the context does nothing. ``dtype``: None, float32, float16 or bfloat16,
    all giving fp32 parameters (module docstring); any other dtype is a ValueError.

    Side effects while entered: ``torch.nn.Module``'s ``__init__`` methods, ``__init_subclass__`` and
    ``apply`` are patched (restored on exit; contexts nest, the innermost settings apply)."""

    def __init__(self, module: Optional[torch.nn.Module] = None, data_parallel_group: Any = None,
                 mem_efficient_linear: bool = True, remote_device: Optional[str] = None, pin_memory: bool = False,
                 config_dict_or_path: Any = None, config: Any = None, enabled: bool = True,
                 dtype: Optional[torch.dtype] = None, mpu: Any = None, zero_param_parallel_group: Any = None,
                 zero_quantized_weights: bool = False, zero_quantized_nontrainable_weights: bool = False,
                 sequence_data_parallel_group: Any = None, param_swapper: Any = None,
                 tensor_overrides: Any = None) -> None:
        self.enabled = bool(enabled)
        if not self.enabled:
            return
        _unsupported(mpu=mpu, zero_param_parallel_group=zero_param_parallel_group,
                     zero_quantized_weights=zero_quantized_weights,
                     zero_quantized_nontrainable_weights=zero_quantized_nontrainable_weights,
                     sequence_data_parallel_group=sequence_data_parallel_group, param_swapper=param_swapper)
        if dtype not in _FP32_ONLY:
            raise ValueError(f"zero.Init(dtype={dtype}): expected None, torch.float32, torch.float16 or "
                             f"torch.bfloat16 (accelops keeps fp32 parameters in every case)")
        if config is not None:
            if config_dict_or_path is not None:
                raise ValueError("zero.Init got both config_dict_or_path and config (deprecated); give one")
            logger.warning("zero.Init(config=...) is deprecated, use config_dict_or_path")
            config_dict_or_path = config
        import torch.distributed as dist

        from accelops.accelerator import get_accelerator
        from accelops.comm import init_distributed

        if not dist.is_initialized():
            init_distributed()
        group = _check_group(data_parallel_group, dist)
        compute = torch.device(get_accelerator().current_device_name())
        part = self._part_device(remote_device, config_dict_or_path, compute, dist.get_world_size())
        self._state = ZeroParamState(group, dist.get_rank(group), dist.get_world_size(group), compute, part,
                                     bool(pin_memory))
        if module is not None:
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f"zero.Init(module=...) must be a torch.nn.Module, got a {type(module).__name__}")
            self._partition_module(module)

    @staticmethod
    def _part_device(remote_device: Optional[str], config: Any, compute: torch.device,
                     world_size: int) -> torch.device:
        if config is not None:
            from ..config import load_config

            offload = load_config(config, world_size).zero.offload_param
            if remote_device is None and offload.enabled:
                remote_device = offload.device
        if remote_device is None:
            return compute
        name = str(getattr(remote_device, "value", remote_device)).lower()
        if name == "nvme":
            raise ValueError("zero.Init(remote_device='nvme'): accelops keeps parameters in CPU or device memory "
                             "only; use 'cpu' or None")
        if name in ("cpu", "none"):
            return torch.device("cpu") if name == "cpu" else compute
        raise ValueError(f"zero.Init(remote_device={remote_device!r}): expected None, 'cpu' or 'nvme'")

    def _partition_module(self, module: torch.nn.Module) -> None:
        for param in module.parameters():
            if not is_zero_param(param):
                partition(param, self._state)

    def __enter__(self) -> "Init":
        if not self.enabled:
            return self
        if not _active:
            _patch()
        _active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled:
            return
        _active.remove(self)
        if not _active:
            _unpatch()
