"""Checks of optimizer arguments shared by the CPU optimizers and FusedAdam: clear errors, never an
IndexError or AttributeError from deep inside."""
from __future__ import annotations

from typing import Any, Tuple

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
