"""The one validator of the fused Adam op: its fake implementation, its kernels and ``FusedAdam`` raise the
same clear errors, each naming the tensor in the caller's terms.

``Labels`` says how tensors are named: the op's (``fused_adam: grads[1]``) or the optimizer's (``FusedAdam:
the gradient of param 1 of its group``). ``check_param`` checks a param with its gradient, ``check_state``
its state, ``check_step`` all the op's arguments (lengths, every param and state, the AMP scalars).
Nothing here touches a device: it reads metadata only, so fake tensors are checked the same way.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["DTYPES", "Labels", "check_dense", "check_param", "check_placed", "check_state", "check_step", "op_labels",
           "optimizer_labels"]

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Labels(NamedTuple):
    """How messages name the tensors of the i-th param: ``param_name(i)``, ``grad_name(i)``,
    ``state_name(i, key)``, each message starting with ``prefix``."""

    prefix: str
    param_name: Callable[[int], str]
    grad_name: Callable[[int], str]
    state_name: Callable[[int, str], str]

    def param(self, i: int) -> str:
        return f"{self.prefix}: {self.param_name(i)}"

    def grad(self, i: int) -> str:
        return f"{self.prefix}: {self.grad_name(i)}"

    def state(self, i: int, key: str) -> str:
        return f"{self.prefix}: {self.state_name(i, key)}"


def op_labels() -> Labels:
    """The op's own names: ``fused_adam: params[i]``, ``grads[i]``, ``exp_avgs[i]``, ``steps[i]``."""
    lists = {"exp_avg": "exp_avgs", "exp_avg_sq": "exp_avg_sqs", "step": "steps"}
    return Labels("fused_adam", lambda i: f"params[{i}]", lambda i: f"grads[{i}]", lambda i, key: f"{lists[key]}[{i}]")


def optimizer_labels(index: Callable[[int], int], where: str = "of its group") -> Labels:
    """FusedAdam's names: ``param <index(i)> <where>``, its gradient and its state."""
    return Labels("FusedAdam", lambda i: f"param {index(i)} {where}", lambda i: f"the gradient of param {index(i)} {where}",
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


def check_state(labels: Labels, i: int, p: Tensor, m, v, step, device: torch.device, first: int = 0) -> None:
    """The i-th param's state: ``exp_avg``/``exp_avg_sq`` dense, on ``device`` (that of param ``first``),
    contiguous, both float32 or both the param dtype, of the param's shape; ``step`` a one-element float32
    tensor on ``device``."""
    first_name = labels.param_name(first)
    for key, t in (("exp_avg", m), ("exp_avg_sq", v)):
        check_dense(labels.state(i, key), t)
        check_placed(labels.state(i, key), t, device, first_name)
    if m.dtype not in (torch.float32, p.dtype) or v.dtype != m.dtype:
        raise TypeError(f"{labels.state(i, 'exp_avg')} and exp_avg_sq have dtypes {m.dtype}/{v.dtype}; the state must "
                        f"be float32 or the param dtype {p.dtype}, the same for both")
    for key, t in (("exp_avg", m), ("exp_avg_sq", v)):
        if t.shape != p.shape:
            raise ValueError(f"{labels.state(i, key)} has shape {tuple(t.shape)}; it must have the param's shape "
                             f"{tuple(p.shape)}")
    one_element_fp32(step, labels.state(i, "step"), device)


def check_step(params, grads, exp_avgs, exp_avg_sqs, steps, grad_scale=None, found_inf=None,
               labels: Optional[Labels] = None) -> None:
    """Raise a clear Python error for any input the kernels do not take (any device, fake tensors too):
    list lengths, then every param with its gradient and state, then ``grad_scale`` and ``found_inf``.

    Bad input never reaches the C++ op this way; its own checks are a last line with constant messages.
    """
    labels = labels or op_labels()
    n = len(params)
    if not (len(grads) == n and len(exp_avgs) == n and len(exp_avg_sqs) == n and len(steps) == n):
        raise ValueError("fused_adam: params, grads, exp_avgs, exp_avg_sqs and steps must have the same length, got "
                         f"{len(params)}, {len(grads)}, {len(exp_avgs)}, {len(exp_avg_sqs)}, {len(steps)}")
    if n == 0:
        return
    check_dense(labels.param(0), params[0])
    device = params[0].device
    for i in range(n):
        check_param(labels, i, params[i], grads[i], device)
        check_state(labels, i, params[i], exp_avgs[i], exp_avg_sqs[i], steps[i], device)
    for name, scalar in (("grad_scale", grad_scale), ("found_inf", found_inf)):
        if scalar is not None:
            one_element_fp32(scalar, f"{labels.prefix}: {name}", device)
