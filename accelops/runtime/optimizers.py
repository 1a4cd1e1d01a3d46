"""The engine's optimizer: the one the config names, or the client's (an instance or a callable).

Which class a config optimizer becomes (DeepSpeed facts from deepspeed/runtime/engine.py
``_configure_basic_optimizer``, with accelops' device rule):

============  ==============================  ==========================================
type          params on the CPU               params on another device (CUDA, ...)
============  ==============================  ==========================================
Adam, AdamW   ``CPUAdam(adamw_mode=...)``     ``FusedAdam(adam_w_mode=...)``
Adagrad       ``CPUAdagrad``                  ``torch.optim.Adagrad``
Lion          ``CPULion``                     ``FusedLion``
SGD           ``torch.optim.SGD``             ``torch.optim.SGD``
============  ==============================  ==========================================

``torch_adam: true`` gives ``torch.optim.Adam`` / ``AdamW``. The Adam rule is DeepSpeed's: decoupled weight
decay (AdamW) unless ``adam_w_mode`` is false; the config parser already resolved it
(``OptimizerConfig.adam_w_mode``). Lion takes DeepSpeed's defaults (lr 1e-3, betas (0.9, 0.999)), which
differ from ``CPULion``'s own. The engine keeps fp32 master weights, so ``fp32_optimizer_states`` is
always met and is not passed on.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import torch

from .errors import ConfigError
from .optimizer_config import OptimizerConfig

_LION_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999)}  # DeepSpeedCPULion / FusedLion


def _param_tensors(params: List[Any]) -> List[torch.Tensor]:
    """The tensors of a params list (tensors, or torch's param-group dicts)."""
    found = []
    for item in params:
        if isinstance(item, dict):
            group = item.get("params", [])
            found.extend([group] if torch.is_tensor(group) else list(group))
        else:
            found.append(item)
    return found


def _device_type(params: List[Any]) -> str:
    """The one device type of the params; ValueError when they are on several or there are none."""
    types = {t.device.type for t in _param_tensors(params)}
    if not types:
        raise ValueError("the optimizer would get no parameters: model_parameters is empty (and the model has none)")
    if len(types) > 1:
        raise ValueError(f"the model's parameters are on several device types ({', '.join(sorted(types))}); "
                         f"the engine trains a model on one device per rank")
    return types.pop()


def _no_amsgrad(name: str, kwargs: Dict[str, Any]) -> None:
    if kwargs.pop("amsgrad", False):
        raise ConfigError("optimizer.params.amsgrad", f"is true, which {name} does not support (DeepSpeed's "
                          f"CPU and fused optimizers ignore or refuse it too); remove it or set it false")


def build_optimizer(config: OptimizerConfig, params: List[Any], on_cpu: Optional[bool] = None) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over ``params`` (tensors or param-group dicts), by the table in the
    module docstring. ``on_cpu``: whether the optimizer will step CPU tensors (True for ZeRO-Offload, whose
    parameters move to CPU memory after this call); None: the params' device decides. Bad params raise
    :class:`ConfigError` (or the optimizer's own ValueError)."""
    kwargs = dict(config.params)
    kwargs.pop("fp32_optimizer_states", None)  # master weights and state are fp32 here in any case
    device_type = _device_type(params)
    on_cpu = device_type == "cpu" if on_cpu is None else on_cpu
    if config.type in ("Adam", "AdamW"):
        if config.torch_adam:
            if kwargs.pop("bias_correction", True) is False:
                raise ConfigError("optimizer.params.bias_correction", "is false, but torch_adam's torch.optim.Adam "
                                  "always corrects the bias; remove one of them")
            cls = torch.optim.AdamW if config.adam_w_mode else torch.optim.Adam
            return cls(params, **kwargs)
        if on_cpu:
            from accelops.ops import CPUAdam

            _no_amsgrad("CPUAdam", kwargs)
            return CPUAdam(params, adamw_mode=config.adam_w_mode, **kwargs)
        from accelops.ops import FusedAdam

        _no_amsgrad("FusedAdam", kwargs)
        return FusedAdam(params, adam_w_mode=config.adam_w_mode, **kwargs)
    if config.type == "Adagrad":
        _no_amsgrad("Adagrad", kwargs)
        if on_cpu:
            from accelops.ops import CPUAdagrad

            return CPUAdagrad(params, **kwargs)
        return torch.optim.Adagrad(params, **kwargs)
    if config.type == "Lion":
        kwargs = {**_LION_DEFAULTS, **kwargs}
        if on_cpu:
            from accelops.ops import CPULion

            return CPULion(params, **kwargs)
        from accelops.ops import FusedLion

        return FusedLion(params, **kwargs)
    if config.type == "SGD":
        return torch.optim.SGD(params, **kwargs)
    raise ConfigError("optimizer.type", f"{config.type!r} has no builder (a bug: the config parser accepted it)")


def client_optimizer(optimizer: Any, params: List[Any]) -> torch.optim.Optimizer:
    """The client's optimizer: an instance is used as is, a callable is called with ``params``.

    TypeError when it is neither, or when the callable returns something that is not an optimizer."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        built = optimizer(params)
        if not isinstance(built, torch.optim.Optimizer):
            raise TypeError(f"the optimizer callable passed to initialize() returned a {type(built).__name__}, "
                            f"not a torch.optim.Optimizer")
        return built
    raise TypeError(f"initialize(optimizer=...) must be a torch.optim.Optimizer or a callable that takes the "
                    f"model parameters and returns one, got a {type(optimizer).__name__}")


def client_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer) -> Any:
    """The client's LR scheduler: an object with ``step`` is used as is; a callable is called with the
    optimizer (DeepSpeed's two forms). TypeError otherwise."""
    if hasattr(scheduler, "step") and callable(scheduler.step):
        return scheduler
    if callable(scheduler):
        built = scheduler(optimizer)
        if not (hasattr(built, "step") and callable(built.step)):
            raise TypeError(f"the lr_scheduler callable passed to initialize() returned a {type(built).__name__}, "
                            f"which has no step() method")
        return built
    raise TypeError(f"initialize(lr_scheduler=...) must be a scheduler (with step(), get_lr(), state_dict() and "
                    f"load_state_dict()) or a callable that takes the optimizer and returns one, got a "
                    f"{type(scheduler).__name__}")


def is_elementwise_kernel_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """True for accelops' kernel optimizers (the CPU ones, FusedAdam, FusedLion): their update is
    elementwise and their kernels take plain tensors, so under FSDP they step on each rank's local shards."""
    from accelops.ops import FusedAdam, FusedLion
    from accelops.ops.cpu_optimizer_base import CPUOptimizerBase

    return isinstance(optimizer, (CPUOptimizerBase, FusedAdam, FusedLion))


def optimizer_params(optimizer: torch.optim.Optimizer) -> List[torch.Tensor]:
    """Every param of every group, in order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def drop_empty_groups(optimizer: torch.optim.Optimizer) -> None:
    """Remove param groups without params (DeepSpeed does the same)."""
    optimizer.param_groups[:] = [group for group in optimizer.param_groups if len(group["params"]) != 0]


def as_param_list(model_parameters: Optional[Iterable[Any]], model: torch.nn.Module) -> List[Any]:
    """``model_parameters`` as a list (default: the model's parameters), as DeepSpeed converts it."""
    params = list(model.parameters() if model_parameters is None else model_parameters)
    for i, item in enumerate(params):
        if not (torch.is_tensor(item) or isinstance(item, dict)):
            raise TypeError(f"model_parameters[{i}] is a {type(item).__name__}; expected tensors or param-group "
                            f"dicts (e.g. model.parameters() or [{{'params': ..., 'lr': ...}}])")
    return params

