"""The one validator of the fused Lion op: its fake implementation, its kernels and ``FusedLion`` raise the
same clear errors, each naming the tensor in the caller's terms (see ``accelops.ops.fused_validate``).

Params and gradients follow the family's rules (``check_tensors``); ``check_state`` checks a param's
``exp_avg`` and ``check_step`` all the op's arguments. Nothing here touches a device: it reads metadata only,
so fake tensors are checked the same way.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch

from ..fused_validate import Labels, check_dense, check_placed, check_tensors, op_labels

__all__ = ["check_state", "check_step"]


def check_state(labels: Labels, i: int, p: torch.Tensor, state: Mapping[str, object], device: torch.device,
                first: int = 0) -> None:
    """The i-th param's ``exp_avg``: dense, on ``device`` (that of param ``first``), contiguous, float32 or the
    param dtype, of the param's shape."""
    label, m = labels.state(i, "exp_avg"), state.get("exp_avg")
    check_dense(label, m)
    check_placed(label, m, device, labels.param_name(first))
    if m.dtype not in (torch.float32, p.dtype):
        raise TypeError(f"{label} has dtype {m.dtype}; the state must be float32 or the param dtype {p.dtype}")
    if m.shape != p.shape:
        raise ValueError(f"{label} has shape {tuple(m.shape)}; it must have the param's shape {tuple(p.shape)}")


def check_step(params, grads, exp_avgs, labels: Optional[Labels] = None) -> None:
    """Raise a clear Python error for any input the kernels do not take (any device, fake tensors too):
    list lengths, then every param with its gradient and its ``exp_avg``.

    Bad input never reaches the C++ op this way; its own checks are a last line with constant messages.
    """
    labels = labels or op_labels("fused_lion")
    n = len(params)
    if not (len(grads) == n and len(exp_avgs) == n):
        raise ValueError(f"fused_lion: params, grads and exp_avgs must have the same length, got {len(params)}, "
                         f"{len(grads)}, {len(exp_avgs)}")
    check_tensors(labels, params, grads, {"exp_avg": exp_avgs}, check_state)
