"""The ``optimizer`` section: ``type`` and the ``params`` with DeepSpeed's names.

DeepSpeed facts (deepspeed/runtime/config.py, deepspeed/runtime/engine.py ``_configure_basic_optimizer``):
the names adam, adamw, adagrad, lion (and DeepSpeed's other own optimizers) are matched case-insensitively;
any other name is looked up in ``torch.optim`` as spelled (so "SGD"). For Adam and AdamW the params
``torch_adam`` (default false) and ``adam_w_mode`` (default true) are taken out before the rest reach the
optimizer, and the update rule is AdamW (decoupled weight decay) when the type is AdamW *or* adam_w_mode is
true: ``"Adam"`` means AdamW unless ``adam_w_mode`` is false. ``max_grad_norm`` as an optimizer param is
refused (``gradient_clipping`` is the key). The optimizer section's other key is ``legacy_fusion``.

accelops matches all five names case-insensitively and records the canonical spelling in ``type``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ._checks import boolean, number, optional, pair
from ._frozen import FrozenDict
from ._keys import Key, closest, no_effect, read_section, used
from .errors import ConfigError

_LR, _NONNEG, _BETAS = used(number(0)), used(number(0)), used(pair(0.0, 1.0))

_ADAM = {"lr": _LR, "betas": _BETAS, "eps": _NONNEG, "weight_decay": _NONNEG, "bias_correction": used(boolean),
         "amsgrad": used(boolean), "adam_w_mode": used(boolean), "torch_adam": used(boolean),
         "fp32_optimizer_states": used(boolean), "set_grad_none": no_effect(boolean)}
_ADAGRAD = {"lr": _LR, "eps": _NONNEG, "weight_decay": _NONNEG, "lr_decay": _NONNEG,
            "initial_accumulator_value": _NONNEG, "amsgrad": used(boolean), "maximize": used(boolean),
            "fp32_optimizer_states": used(boolean), "foreach": no_effect(optional(boolean)),
            "fused": no_effect(optional(boolean)), "differentiable": no_effect(boolean)}
_LION = {"lr": _LR, "betas": _BETAS, "weight_decay": _NONNEG, "fp32_optimizer_states": used(boolean),
         "set_grad_none": no_effect(boolean)}
_SGD = {"lr": _LR, "momentum": _NONNEG, "dampening": used(number()), "weight_decay": _NONNEG,
        "nesterov": used(boolean), "maximize": used(boolean), "foreach": no_effect(optional(boolean)),
        "fused": no_effect(optional(boolean)), "differentiable": no_effect(boolean)}

# lower-cased name -> (canonical type, its params)
OPTIMIZERS: Dict[str, tuple] = {"adam": ("Adam", _ADAM), "adamw": ("AdamW", _ADAM), "adagrad": ("Adagrad", _ADAGRAD),
                                "lion": ("Lion", _LION), "sgd": ("SGD", _SGD)}
# DeepSpeed's other optimizers, which accelops does not provide
DEEPSPEED_ONLY = ("lamb", "onebitadam", "zerooneadam", "onebitlamb", "muadam", "muadamw", "musgd", "muon")

SECTION_KEYS: Dict[str, Key] = {"type": used(lambda path, v: v, required=True), "params": used(lambda path, v: v),
                                "legacy_fusion": no_effect(boolean)}


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer named in the config.

    ``type``: "Adam", "AdamW", "Adagrad", "Lion" or "SGD". ``params``: the constructor keyword arguments
    as given, without ``adam_w_mode`` and ``torch_adam`` (read-only; ``dict(params)`` copies).
    ``adam_w_mode``: for Adam/AdamW the effective rule (True: decoupled weight decay), None for others.
    ``torch_adam``: Adam/AdamW asked for torch's implementation instead of DeepSpeed's.
    """
    type: str
    params: FrozenDict = field(default_factory=FrozenDict)
    adam_w_mode: Optional[bool] = None
    torch_adam: bool = False


def _type(value: Any) -> tuple:
    if not isinstance(value, str):
        raise ConfigError("optimizer.type", f"must be a string such as 'AdamW', got {value!r}")
    lower = value.lower()
    if lower in OPTIMIZERS:
        return OPTIMIZERS[lower]
    supported = ", ".join(name for name, _ in OPTIMIZERS.values())
    if lower in DEEPSPEED_ONLY:
        raise ConfigError("optimizer.type", f"{value!r} is a DeepSpeed optimizer that accelops does not provide; "
                          f"supported: {supported}, or pass your own optimizer to initialize()")
    near = OPTIMIZERS[closest(lower, OPTIMIZERS)][0]
    raise ConfigError("optimizer.type", f"{value!r} is not a supported optimizer (closest: {near!r}); supported: "
                      f"{supported}, or pass your own optimizer to initialize()")


def parse_optimizer(value: Any, no_effect_paths: List[str]) -> Optional[OptimizerConfig]:
    """The ``optimizer`` section as an :class:`OptimizerConfig`, or None when absent."""
    if value is None:
        return None
    section = read_section("optimizer", value, SECTION_KEYS, no_effect_paths)
    kind, table = _type(section["type"])
    raw = {} if section.get("params") is None else section["params"]
    if isinstance(raw, dict) and "max_grad_norm" in raw:
        raise ConfigError("optimizer.params.max_grad_norm", "is not supported as an optimizer parameter (DeepSpeed "
                          "refuses it too); use the top-level key gradient_clipping")
    params = read_section("optimizer.params", raw, table, no_effect_paths)
    if kind not in ("Adam", "AdamW"):
        return OptimizerConfig(kind, FrozenDict(params))
    torch_adam = params.pop("torch_adam", False)
    adam_w_mode = kind == "AdamW" or params.pop("adam_w_mode", True)  # DeepSpeed's effective_adam_w_mode
    params.pop("adam_w_mode", None)  # also when AdamW short-circuited the line above
    return OptimizerConfig(kind, FrozenDict(params), adam_w_mode=adam_w_mode, torch_adam=torch_adam)
