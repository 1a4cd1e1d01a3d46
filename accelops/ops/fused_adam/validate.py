"""The one validator of the fused Adam op: its fake implementation, its kernels and ``FusedAdam`` raise the
same clear errors, each naming the tensor in the caller's terms (``fused_adam: grads[1]``, or ``FusedAdam:
the gradient of param 1 of its group``; see ``accelops.ops.fused_validate``).

``check_state`` checks a param's state, ``check_step`` all the op's arguments (lengths, every param and
state, the AMP scalars); params with their gradients follow the family's rules (``check_tensors``). Nothing
here touches a device: it reads metadata only, so fake tensors are checked the same way.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor

from ..fused_validate import Labels, check_dense, check_placed, check_tensors, one_element_fp32, op_labels

__all__ = ["check_state", "check_step"]


def check_state(labels: Labels, i: int, p: Tensor, state: Mapping[str, object], device: torch.device,
                first: int = 0) -> None:
    """The i-th param's state (``exp_avg``, ``exp_avg_sq``, ``step``): ``exp_avg``/``exp_avg_sq`` dense, on
    ``device`` (that of param ``first``), contiguous, both float32 or both the param dtype, of the param's
    shape; ``step`` a one-element float32 tensor on ``device``."""
    first_name = labels.param_name(first)
    m, v = state.get("exp_avg"), state.get("exp_avg_sq")
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
    one_element_fp32(state.get("step"), labels.state(i, "step"), device)


def check_step(params, grads, exp_avgs, exp_avg_sqs, steps, grad_scale=None, found_inf=None,
               labels: Optional[Labels] = None) -> None:
    """Raise a clear Python error for any input the kernels do not take (any device, fake tensors too):
    list lengths, then every param with its gradient and state, then ``grad_scale`` and ``found_inf``.

    Bad input never reaches the C++ op this way; its own checks are a last line with constant messages.
    """
    labels = labels or op_labels("fused_adam")
    n = len(params)
    if not (len(grads) == n and len(exp_avgs) == n and len(exp_avg_sqs) == n and len(steps) == n):
        raise ValueError("fused_adam: params, grads, exp_avgs, exp_avg_sqs and steps must have the same length, got "
                         f"{len(params)}, {len(grads)}, {len(exp_avgs)}, {len(exp_avg_sqs)}, {len(steps)}")
    device = check_tensors(labels, params, grads, {"exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs, "step": steps},
                           check_state)
    if device is None:
        return
    for name, scalar in (("grad_scale", grad_scale), ("found_inf", found_inf)):
        if scalar is not None:
            one_element_fp32(scalar, f"{labels.prefix}: {name}", device)
