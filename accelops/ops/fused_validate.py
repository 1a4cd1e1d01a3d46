"""Checks shared by the validators of the fused (multi-tensor CUDA) optimizer ops.

Each op's ``validate.py`` (``fused_adam``, ``fused_lion``) states the rules of its own state and its
``check_step``; what every op checks alike lives here: how tensors are named (``Labels``, in the op's terms
or the optimizer's), a dense tensor on the step's device, a param with its gradient. Nothing here touches a
device: it reads metadata only, so fake tensors are checked the same way.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["DTYPES", "Labels", "check_dense", "check_param", "check_placed", "check_tensors", "one_element_fp32",
           "op_labels", "optimizer_labels"]

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Labels(NamedTuple):
    """How messages name the tensors of the i-th param: ``param_name(i)``, ``grad_name(i)``,
    ``state_name(i, key)``, each message starting with ``prefix``."""

    prefix: str
    param_name: Callable[[int], str]
    grad_name: Callable[[int], str]
    state_name: Callable[[int, str], str]

    def param(self, i: int) -> str:
        """The i-th param, with the prefix."""
        return f"{self.prefix}: {self.param_name(i)}"

    def grad(self, i: int) -> str:
        """The i-th param's gradient, with the prefix."""
        return f"{self.prefix}: {self.grad_name(i)}"

    def state(self, i: int, key: str) -> str:
        """The i-th param's state ``key``, with the prefix."""
        return f"{self.prefix}: {self.state_name(i, key)}"


def op_labels(op: str) -> Labels:
    """An op's own names: ``<op>: params[i]``, ``grads[i]``, and ``<key>s[i]`` for state (``exp_avgs[i]``,
    ``steps[i]``), the names of the op's list arguments."""
    return Labels(op, lambda i: f"params[{i}]", lambda i: f"grads[{i}]", lambda i, key: f"{key}s[{i}]")


def optimizer_labels(owner: str, index: Callable[[int], int], where: str = "of its group") -> Labels:
    """An optimizer's names (``owner`` is its class name): ``param <index(i)> <where>``, its gradient and its
    state."""
    return Labels(owner, lambda i: f"param {index(i)} {where}", lambda i: f"the gradient of param {index(i)} {where}",
                  lambda i, key: f"the state of param {index(i)} {where}: {key}")


def check_dense(label: str, t) -> None:
    """``t`` must be a dense (strided) tensor; ``label`` names it in the error."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{label} must be a dense tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise RuntimeError(f"{label} is {t.layout}; only dense (strided) tensors are supported (sparse gradients "
                           f"are not)")


def check_placed(label: str, t: Tensor, device: torch.device, first: str) -> None:
    """``t`` must be contiguous and on ``device``, the device of the step's first tensor (named ``first``)."""
    if t.device != device:
        raise ValueError(f"{label} is on {t.device} but {first} is on {device}; all tensors of one step must be on "
                         f"one device")
    if not t.is_contiguous():
        raise ValueError(f"{label} (shape {tuple(t.shape)}) must be contiguous; the update is in place and never "
                         f"goes through a temporary copy")


def one_element_fp32(t, label: str, device: torch.device) -> None:
    """ValueError "<label> must be a one-element float32 tensor on <device>, got ..." unless ``t`` is one."""
    if not isinstance(t, Tensor) or t.numel() != 1 or t.dtype != torch.float32 or t.device != device:
        got = f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{label} must be a one-element float32 tensor on {device}, got {got}")


def check_param(labels: Labels, i: int, p: Tensor, g, device: torch.device) -> None:
    """The i-th param and its gradient: dense, on ``device`` (that of param 0), contiguous, a supported dtype,
    the gradient of the param's dtype and shape."""
    first_name = labels.param_name(0)
    for label, t in ((labels.param(i), p), (labels.grad(i), g)):
        check_dense(label, t)
        check_placed(label, t, device, first_name)
    if p.dtype not in DTYPES:
        raise TypeError(f"{labels.param(i)} has dtype {p.dtype}; supported: float32, float16, bfloat16")
    if g.dtype != p.dtype:
        raise TypeError(f"{labels.grad(i)} has dtype {g.dtype} but its param has {p.dtype}")
    if g.shape != p.shape:
        raise ValueError(f"{labels.param(i)} (shape {tuple(p.shape)}) has a gradient of shape {tuple(g.shape)}")


def check_tensors(labels: Labels, params: Sequence, grads: Sequence, states: Mapping[str, Sequence],
                  check_state: Callable[..., None]) -> Optional[torch.device]:
    """Every param with its gradient (``check_param``) and its state: the op's ``check_state(labels, i, p,
    state, device)`` gets the i-th tensor of each list in ``states`` (``{"exp_avg": exp_avgs, ...}``). The
    lists have the params' length. Returns the step's device (param 0's), None when there are no params."""
    if not params:
        return None
    check_dense(labels.param(0), params[0])
    device = params[0].device
    for i, p in enumerate(params):
        check_param(labels, i, p, grads[i], device)
        check_state(labels, i, p, {key: tensors[i] for key, tensors in states.items()}, device)
    return device
