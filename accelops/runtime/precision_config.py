"""The ``fp16`` and ``bf16`` (alias ``bfloat16``) sections: DeepSpeed's keys and defaults.

DeepSpeed facts (deepspeed/runtime/precision_config.py, deepspeed/runtime/constants.py): ``loss_scale`` 0
means dynamic loss scaling starting at ``2**initial_scale_power`` (16); ``loss_scale_window`` 1000,
``hysteresis`` 2, ``consecutive_hysteresis`` false, ``min_loss_scale`` 1; ``loss_scale_window`` and
``min_loss_scale`` are checked (> 0) only when dynamic scaling is on. bf16 has ``check_grad_overflow``
(true: a step with inf/nan gradients is skipped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

from ._checks import boolean, integer, number
from ._keys import Key, no_effect, read_section, unsupported, used
from .errors import ConfigError

FP16_KEYS: Dict[str, Key] = {
    "enabled": used(boolean),
    "auto_cast": used(boolean),
    "loss_scale": used(number(0)),
    "initial_scale_power": used(integer(0, 127)),  # 2**127 still fits fp32
    "loss_scale_window": used(integer()),
    "hysteresis": used(integer()),
    "consecutive_hysteresis": used(boolean),
    "min_loss_scale": used(number()),
    "fused_mode": no_effect(boolean),  # older DeepSpeed releases
    "fp16_master_weights_and_grads": unsupported("fp16 master weights; accelops keeps fp32 master weights"),
}

BF16_KEYS: Dict[str, Key] = {
    "enabled": used(boolean),
    "check_grad_overflow": used(boolean),
    "immediate_grad_update": no_effect(boolean),
    "bf16_master_weights_and_grads": unsupported("bf16 master weights; accelops keeps fp32 master weights"),
    "bf16_optimizer_states": unsupported("bf16 optimizer states; accelops keeps them in fp32"),
}


@dataclass(frozen=True)
class FP16Config:
    """fp16 mixed precision with DeepSpeed's loss-scaling settings (defaults as DeepSpeed's)."""
    enabled: bool = False
    auto_cast: bool = False
    loss_scale: float = 0.0
    initial_scale_power: int = 16
    loss_scale_window: int = 1000
    hysteresis: int = 2
    consecutive_hysteresis: bool = False
    min_loss_scale: float = 1

    @property
    def dynamic_loss_scale(self) -> bool:
        """True when ``loss_scale`` is 0 (DeepSpeed's engine: ``dynamic_loss_scale()``)."""
        return self.loss_scale == 0

    @property
    def initial_dynamic_scale(self) -> float:
        """``2 ** initial_scale_power``, the first dynamic loss scale."""
        return float(2 ** self.initial_scale_power)

    def dynamic_loss_args(self) -> Dict[str, Any]:
        """DeepSpeed's ``dynamic_loss_scale_args()``: keyword arguments of ``DynamicLossScaler``."""
        return {"init_scale": self.initial_dynamic_scale, "scale_window": self.loss_scale_window,
                "delayed_shift": self.hysteresis, "consecutive_hysteresis": self.consecutive_hysteresis,
                "min_scale": self.min_loss_scale}


@dataclass(frozen=True)
class BF16Config:
    """bf16 mixed precision; ``check_grad_overflow``: skip steps whose gradients hold inf/nan."""
    enabled: bool = False
    check_grad_overflow: bool = True


def parse_fp16(value: Any, no_effect_paths: List[str]) -> FP16Config:
    """The ``fp16`` section (absent: ``{}``) as an :class:`FP16Config`."""
    config = FP16Config(**read_section("fp16", value, FP16_KEYS, no_effect_paths))
    if config.enabled and config.dynamic_loss_scale:
        if config.loss_scale_window < 1:
            raise ConfigError("fp16.loss_scale_window", f"must be >= 1 with dynamic loss scaling (loss_scale 0), "
                              f"got {config.loss_scale_window}")
        if config.min_loss_scale <= 0:
            raise ConfigError("fp16.min_loss_scale", f"must be > 0 with dynamic loss scaling (loss_scale 0), "
                              f"got {config.min_loss_scale}")
        if config.initial_dynamic_scale < config.min_loss_scale:
            raise ConfigError("fp16.initial_scale_power", f"gives a first loss scale 2**{config.initial_scale_power} "
                              f"below fp16.min_loss_scale {config.min_loss_scale}")
        if config.hysteresis < 1:
            raise ConfigError("fp16.hysteresis", f"must be >= 1 with dynamic loss scaling (loss_scale 0): "
                              f"with {config.hysteresis} the scale would never decrease")
    return config


def parse_bf16(config: Dict[str, Any], no_effect_paths: List[str]) -> BF16Config:
    """The ``bf16`` section of the whole ``config``, or DeepSpeed's older spelling ``bfloat16``."""
    if "bf16" in config and "bfloat16" in config:
        raise ConfigError("bfloat16", "and bf16 are two spellings of one section; give only bf16")
    name = "bfloat16" if "bfloat16" in config else "bf16"
    return BF16Config(**read_section(name, config.get(name, {}), BF16_KEYS, no_effect_paths))
