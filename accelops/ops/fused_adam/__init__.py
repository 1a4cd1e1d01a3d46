"""Multi-tensor fused Adam/AdamW: the ``accelops::fused_adam_step_`` op and the ``FusedAdam`` optimizer.

The op updates every tensor of its lists in one go. On CUDA (and ROCm) it runs the ``fused_adam``
extension (built on first use); on any other device, or when the extension cannot be built, it runs a
pure-torch implementation with ``torch.optim.Adam``/``AdamW`` semantics and warns once. Importing this
module registers the op; it builds and loads nothing until a CUDA step runs. The device glue is the fused
family's (``accelops.ops.fused_step``), the optimizer skeleton too (``accelops.ops.fused_optimizer_base``).

Bad input raises a Python TypeError/ValueError/RuntimeError that names the tensor: one validator
(``validate.py``) serves the op, its fake implementation and ``FusedAdam``; the op's own C++ checks (torch
stable ABI, ``csrc/cuda/adam/fused_adam.cpp``) are a last line with constant messages.
"""
from typing import List, Optional

import torch
from torch import Tensor

from ..adam_reference import adam_update_
from ..fused_optimizer_base import FusedOptimizerBase
from ..fused_step import FusedStep
from ..optim_args import AdamWModeAttribute, check_betas
from .build import FusedAdamBuilder
from .validate import check_state, check_step

__all__ = ["FusedAdam", "fused_adam_step_"]


def _adam_torch_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                 adam_w_mode, bias_correction, grad_scale=None, found_inf=None) -> None:
    """Pure-torch step with torch.optim.Adam/AdamW semantics; math in fp32 for 16-bit tensors or state."""
    if found_inf is not None and float(found_inf) != 0.0:
        return
    for p, g, m, v, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        p32, m32, v32 = p.float(), m.float(), v.float()  # the tensors themselves when already fp32
        g32 = g.float()
        if grad_scale is not None:
            g32 = g32 / grad_scale.to(g32.device)
        step = float(step_t) if bias_correction else 0.0
        adam_update_(p32, g32, m32, v32, step, lr, beta1, beta2, eps, weight_decay, adam_w_mode, bias_correction)
        for dst, src in ((p, p32), (m, m32), (v, v32)):
            if dst is not src:
                dst.copy_(src)


_STEP = FusedStep(FusedAdamBuilder, "FusedAdam", check_step, _adam_torch_)


@torch.library.custom_op("accelops::fused_adam_step_", mutates_args=("params", "exp_avgs", "exp_avg_sqs"))
def fused_adam_step_(
    params: List[Tensor],
    grads: List[Tensor],
    exp_avgs: List[Tensor],
    exp_avg_sqs: List[Tensor],
    steps: List[Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    adam_w_mode: bool,
    bias_correction: bool,
    grad_scale: Optional[Tensor] = None,
    found_inf: Optional[Tensor] = None,
) -> None:
    """One Adam (``adam_w_mode=False``: L2 decay) or AdamW step over all tensors, in place.

    ``steps`` hold each tensor's step count, already incremented for this step (one-element float32
    tensors). Grads are divided by ``grad_scale`` when given; nothing is updated when ``found_inf`` is
    non-zero (the skip flag for inf/nan grads). This default implementation serves every device
    without a kernel (pure torch, one-time warning).
    """
    _STEP.fallback(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, adam_w_mode,
                   bias_correction, grad_scale, found_inf)


_STEP.register(fused_adam_step_)


class UnsupportedOptionError(ValueError, RuntimeError):
    """An option FusedAdam does not implement; also a ``RuntimeError``, the type DeepSpeed's FusedAdam raises."""


class FusedAdam(AdamWModeAttribute, FusedOptimizerBase):
    """Adam/AdamW that updates all parameters of a group with one multi-tensor kernel.

    Args mirror DeepSpeed's FusedAdam: ``adam_w_mode=True`` decays weights decoupled (AdamW),
    ``False`` adds ``weight_decay * param`` to the gradient (Adam's L2); it is kept per group under
    torch's key ``decoupled_weight_decay``. ``state_dtype`` is None (state
    in the param dtype, as torch) or ``torch.float32`` (fp32 state for 16-bit params). State keys are
    torch's (``step``, ``exp_avg``, ``exp_avg_sq``), one step count per parameter. Works with
    ``torch.amp.GradScaler``: grads are unscaled inside the step, which is skipped on inf/nan. State dicts of
    DeepSpeed's FusedAdam load (an int ``step`` per param, or in old ones per group); a loaded state never
    changes ``adam_w_mode``.
    """

    _step_supports_amp_scaling = True
    _STEP = _STEP
    _STATE_KEYS = ("exp_avg", "exp_avg_sq")
    _STEPS_IN_OP = True
    _REFUSED_OPTIONS = ("amsgrad", "maximize")
    _RULE_KEYS = ("decoupled_weight_decay",)
    _check_state = staticmethod(check_state)

    def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8, adam_w_mode=True,
                 weight_decay=0.0, amsgrad=False, set_grad_none=True, state_dtype=None):
        if amsgrad:
            raise UnsupportedOptionError("FusedAdam does not support amsgrad (the AMSGrad variant)")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        betas = check_betas("FusedAdam", betas)
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        # decoupled_weight_decay is torch's group key for adam_w_mode: state_dicts load into torch.optim.Adam(W).
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=bool(adam_w_mode))
        super().__init__(params, defaults, set_grad_none, state_dtype)

    def __setstate__(self, state):
        """Fill in FusedAdam's group keys for groups that come from torch.optim.Adam/AdamW state_dicts."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("bias_correction", True)
            group.setdefault("decoupled_weight_decay", self.defaults["decoupled_weight_decay"])

    def _amp_scalar(self, name, device):
        """GradScaler's ``grad_scale`` or ``found_inf`` (set on the optimizer by ``GradScaler.step``) as a
        one-element float32 tensor on ``device``, or None."""
        t = getattr(self, name, None)
        if t is None:
            return None
        out = t.to(device=device, dtype=torch.float32)
        if out.numel() != 1:
            raise ValueError(f"FusedAdam: {name} must have one element, got shape {tuple(t.shape)}")
        return out

    def _op_scalars(self, group, device):
        """lr, betas, eps, weight_decay, the mode, bias correction and GradScaler's scalars on ``device``."""
        beta1, beta2 = group["betas"]
        return (float(group["lr"]), float(beta1), float(beta2), float(group["eps"]), float(group["weight_decay"]),
                bool(group["decoupled_weight_decay"]), bool(group["bias_correction"]),
                self._amp_scalar("grad_scale", device), self._amp_scalar("found_inf", device))

    def _skip_flag(self, scalars):
        """GradScaler's found-inf flag, the op's last argument."""
        return scalars[-1]
