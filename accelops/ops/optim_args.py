"""Optimizer arguments and settings shared by the CPU optimizers and FusedAdam: clear errors (never an
IndexError or AttributeError from deep inside), DeepSpeed's ``adam_w_mode`` attribute, and the rule that a
loaded state_dict keeps the update rule chosen at construction."""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Sequence, Tuple

from torch import Tensor


def check_betas(owner: str, betas: Any, closed: bool = False) -> Tuple[float, float]:
    """``betas`` as a pair of floats, each in [0, 1) (``closed``: [0, 1]); ``ValueError`` naming ``owner``."""
    interval = "[0, 1]" if closed else "[0, 1)"
    try:
        pair = tuple(float(b) for b in betas)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2:
        raise ValueError(f"{owner}: betas must be a pair of numbers (beta1, beta2), each in {interval}; got {betas!r}")
    if not all(0.0 <= b < 1.0 or (closed and b == 1.0) for b in pair):
        raise ValueError(f"Invalid betas: {betas}; each must be in {interval}")
    return pair


def check_saved_tensor(owner: str, value: Any, key: str, pid: Any) -> Tensor:
    """A state_dict entry that must be a tensor; ``ValueError`` naming the param and key otherwise."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{owner}: state {key!r} of param {pid} is a {type(value).__name__}, expected a tensor: a "
                         f"state_dict of another optimizer, or edited by hand?")
    return value


def keep_group_settings(owner: str, groups: List[Dict[str, Any]], before: List[Dict[str, Any]],
                        saved_groups: List[Dict[str, Any]], rule_keys: Sequence[str]) -> None:
    """After ``torch.optim.Optimizer.load_state_dict`` replaced ``groups`` with the saved ones: every key in
    ``rule_keys`` (the update rule, e.g. ``decoupled_weight_decay``) and every key a saved group lacked take the
    values of ``before`` (the groups as constructed) again. A saved rule that differs warns and is not obeyed:
    DeepSpeed keeps its Adam mode outside the groups, so a loaded state never changes the update rule."""
    for group, mine, saved in zip(groups, before, saved_groups):
        for key, value in mine.items():
            if key == "params":
                continue
            if key in rule_keys and key in saved and saved[key] != value:
                warnings.warn(f"{owner}: the loaded state_dict has {key}={saved[key]!r}; this optimizer keeps "
                              f"{key}={value!r}, chosen at construction (a loaded state never changes the update "
                              f"rule)", stacklevel=4)
            if key in rule_keys or key not in saved:
                group[key] = value


class AdamWModeAttribute:
    """DeepSpeed's ``adam_w_mode`` attribute over torch's group key ``decoupled_weight_decay``."""

    @property
    def adam_w_mode(self) -> bool:
        """True for AdamW (decoupled weight decay), False for Adam with L2 decay. Setting it switches every
        group."""
        return all(bool(group["decoupled_weight_decay"]) for group in self.param_groups)

    @adam_w_mode.setter
    def adam_w_mode(self, value: bool) -> None:
        for group in self.param_groups:
            group["decoupled_weight_decay"] = bool(value)
