"""Multi-tensor fused Lion: the ``accelops::fused_lion_step_`` op and the ``FusedLion`` optimizer.

Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), per element, in fp32 math (each
operation rounded on its own, no fused multiply-add)::

    c = beta1 * m + (1 - beta1) * g
    p = p * (1 - lr * weight_decay) - lr * sign(c)      # sign(0) = sign(nan) = 0, as torch.sign
    m = beta2 * m + (1 - beta2) * g

The op updates every tensor of its lists in one go. On CUDA (and ROCm) it runs the ``fused_lion``
extension (built on first use); on any other device, or when the extension cannot be built, it runs the
same math in pure torch and warns once. Importing this module registers the op; it builds and loads
nothing until a CUDA step runs. The device glue is the fused family's (``accelops.ops.fused_step``), the
optimizer skeleton too (``accelops.ops.fused_optimizer_base``).

Bad input raises a Python TypeError/ValueError/RuntimeError that names the tensor: one validator
(``validate.py``) serves the op, its fake implementation and ``FusedLion``; the extension's own checks have
constant messages only (see ``accelops.ops.fused_step`` for why).
"""
from typing import List

import torch
from torch import Tensor

from ..fused_optimizer_base import FusedOptimizerBase
from ..fused_step import FusedStep
from ..optim_args import check_betas
from .build import FusedLionBuilder
from .validate import check_state, check_step

__all__ = ["FusedLion", "fused_lion_step_"]


def _lion_torch_(params, grads, exp_avgs, lr, beta1, beta2, weight_decay) -> None:
    """The torch reference (and fallback) of the op: fp32 math whatever the storage dtypes, each result
    rounded once to its tensor's dtype. Each product and sum is rounded to fp32 on its own (no fused
    multiply-add), as in the CUDA kernel (built with ``--fmad=false``): where ``beta1*m + (1-beta1)*g``
    cancels exactly, the fp32 rounding decides its sign, so both paths must round alike to agree."""
    for p, g, m in zip(params, grads, exp_avgs):
        p32, m32, g32 = p.float(), m.float(), g.float()  # the tensors themselves when already fp32
        c = m32 * beta1 + g32 * (1.0 - beta1)
        if weight_decay != 0.0:  # no inf * 0 for lr=inf
            p32.mul_(1.0 - lr * weight_decay)
        p32.sub_(torch.sign(c), alpha=lr)  # lr * sign(c) is exact
        m.copy_(m32 * beta2 + g32 * (1.0 - beta2))
        if p32 is not p:
            p.copy_(p32)


_STEP = FusedStep(FusedLionBuilder, "FusedLion", check_step, _lion_torch_)


@torch.library.custom_op("accelops::fused_lion_step_", mutates_args=("params", "exp_avgs"))
def fused_lion_step_(params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], lr: float, beta1: float,
                     beta2: float, weight_decay: float) -> None:
    """One Lion step over all tensors, in place (``params`` and ``exp_avgs``; see the module docstring).

    Params are float32, float16 or bfloat16, each grad of its param's dtype and shape, each ``exp_avg``
    float32 or the param's dtype; all on one device and contiguous. This default implementation serves
    every device without a kernel (pure torch, one-time warning).
    """
    _STEP.fallback(params, grads, exp_avgs, lr, beta1, beta2, weight_decay)


_STEP.register(fused_lion_step_)


class FusedLion(FusedOptimizerBase):
    """Lion that updates all parameters of a group with one multi-tensor kernel (CUDA/ROCm; pure torch on
    every other device, with one warning).

    Args are DeepSpeed's FusedLion's: ``lr``, ``betas`` (each in [0, 1]), ``weight_decay`` (decoupled:
    ``p *= 1 - lr * weight_decay``) and ``set_grad_none`` (what ``zero_grad()`` does by default).
    ``state_dtype`` (an accelops addition, as FusedAdam's) is None (``exp_avg`` in the param dtype, as
    DeepSpeed) or ``torch.float32`` (fp32 momentum for 16-bit params: with ``beta2`` near 1 a bf16 momentum
    barely moves). Per param, state is ``exp_avg`` and a ``step`` count (a float32 tensor on the param's
    device, counting the steps that param took). State dicts of DeepSpeed's FusedLion load (an int ``step``
    per param, or per group), and so do DeepSpeedCPULion's (its unused ``exp_avg_sq`` is dropped).
    """

    _STEP = _STEP
    _STATE_KEYS = ("exp_avg",)
    _check_state = staticmethod(check_state)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, set_grad_none=True, state_dtype=None):
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        betas = check_betas("FusedLion", betas, closed=True)
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay), set_grad_none, state_dtype)

    def _op_scalars(self, group, device):
        """lr, betas and weight_decay."""
        beta1, beta2 = group["betas"]
        return float(group["lr"]), float(beta1), float(beta2), float(group["weight_decay"])
