"""The training runtime: DeepSpeed's config, LR schedules, fp16 loss scaling and the training engine.

``load_config(config, world_size)`` reads a DeepSpeed JSON config strictly into frozen dataclasses
(:mod:`accelops.runtime.config`); :mod:`accelops.runtime.lr_schedules` has DeepSpeed's five LR schedules
and ``build_scheduler``; :mod:`accelops.runtime.loss_scaler` has DeepSpeed's fp16 loss scaling and the
overflow decision shared by all ranks. ``initialize`` (:mod:`accelops.runtime.entry`) builds the
training engine (:mod:`accelops.runtime.engine`) on DDP / FSDP2. Importing this package imports no
torch; the schedule and engine names load their module (and torch) on first use, and so do the submodules
reached as attributes (``accelops.runtime.utils`` after ``import accelops``, as ``deepspeed.runtime.utils``).
"""
from importlib import import_module
from importlib.util import find_spec

from .config import EngineConfig, load_config
from .errors import ConfigError, DeepSpeedConfigError
from .loss_scaler import (DynamicLossScaler, LossScaleAtMinimumError, LossScaler, agree_on_overflow,
                          create_loss_scaler, has_overflow, torch_all_reduce_max)

_LAZY = {name: "lr_schedules" for name in (
    "LRRangeTest", "OneCycle", "WarmupCosineLR", "WarmupDecayLR", "WarmupLR", "build_scheduler")}
_LAZY.update(initialize="entry", add_config_arguments="args", DeepSpeedEngine="engine")

__all__ = ["ConfigError", "DeepSpeedConfigError", "DynamicLossScaler", "EngineConfig", "LossScaleAtMinimumError",
           "LossScaler", "agree_on_overflow", "create_loss_scaler", "has_overflow", "load_config",
           "torch_all_reduce_max", *sorted(_LAZY)]


def __getattr__(name):
    """A lazy name's value, or the submodule ``name`` imported on first access."""
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    if not name.startswith("_") and find_spec(f"{__name__}.{name}") is not None:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
