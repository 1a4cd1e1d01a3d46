"""CPU Lion: the ``accelops::cpu_lion_step_`` op and the ``CPULion`` optimizer.

Lion (Chen et al., 2023): ``p *= 1 - lr*wd; p -= lr * sign(beta1*m + (1-beta1)*g);
m = beta2*m + (1-beta2)*g``. The op runs the ``cpu_lion`` extension (built on first use) or, when it
cannot be loaded or ``ACCELOPS_CPU_OPS_FALLBACK=1`` is set, the same math in pure torch.
Importing this module defines the op; it builds nothing.
"""
from typing import List

import torch
from torch import Tensor

from ..cpu_optim_validate import caller_checked, check_step
from ..cpu_optimizer_base import CPUOptimizerBase, DeepSpeedCPUOptimizer
from ..loader import CPU_FALLBACK_ENV, kernel_loader
from ..optim_args import check_betas
from .build import CPULionBuilder

__all__ = ["CPULion", "DeepSpeedCPULion", "cpu_lion_step_"]


def _lion_torch_(params, grads, exp_avgs, param_copies, lr, beta1, beta2, weight_decay, maximize) -> None:
    """Pure-torch Lion step, fp32 math and state."""
    copies = param_copies or [None] * len(params)
    for p, g, m, c in zip(params, grads, exp_avgs, copies):
        p32 = p.float()
        g32 = -g.float() if maximize else g.float()
        if weight_decay != 0.0:  # no inf * 0 for lr=inf
            p32.mul_(1.0 - lr * weight_decay)
        p32.add_(torch.sign(m.mul(beta1).add_(g32, alpha=1.0 - beta1)), alpha=-lr)
        m.mul_(beta2).add_(g32, alpha=1.0 - beta2)
        if p32 is not p:
            p.copy_(p32)
        if c is not None:
            c.copy_(p32)


def _check(cpu: bool, params, grads, exp_avgs, param_copies) -> None:
    """The op's arguments through the CPU optimizers' one validator."""
    states = [("exp_avgs", exp_avgs)]
    check_step("cpu_lion_step_", params, grads, states, param_copies, None, cpu=cpu)


@torch.library.custom_op("accelops::cpu_lion_step_", mutates_args=("params", "exp_avgs", "param_copies"))
def cpu_lion_step_(params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], param_copies: List[Tensor],
                   lr: float, beta1: float, beta2: float, weight_decay: float, maximize: bool) -> None:
    """One Lion step over all tensors, in place (float32 ``exp_avgs``; ``param_copies`` empty or one
    bf16/fp16 copy per param, overwritten). Default implementation (non-CPU devices): pure torch."""
    _check(False, params, grads, exp_avgs, param_copies)
    _lion_torch_(params, grads, exp_avgs, param_copies, lr, beta1, beta2, weight_decay, maximize)


@cpu_lion_step_.register_kernel("cpu")
def _cpu_lion_step_cpu(params, grads, exp_avgs, param_copies, lr, beta1, beta2, weight_decay, maximize) -> None:
    if not caller_checked():  # a direct call; the optimizers checked their arguments already
        _check(True, params, grads, exp_avgs, param_copies)
    module = kernel_loader(CPULionBuilder, fallback_env=CPU_FALLBACK_ENV).module()
    fn = module.lion_step if module is not None else _lion_torch_
    fn(params, grads, exp_avgs, param_copies, lr, beta1, beta2, weight_decay, maximize)


@cpu_lion_step_.register_fake
def _cpu_lion_step_fake(params, grads, exp_avgs, param_copies, lr, beta1, beta2, weight_decay, maximize) -> None:
    _check(False, params, grads, exp_avgs, param_copies)


class CPULion(CPUOptimizerBase):
    """Lion for CPU params (float32/bfloat16/float16) with float32 state (``exp_avg``, ``step``).
    ``step(grads=..., param_copies=...)`` runs the fused master-weight step; ``backend`` tells which
    path runs."""

    _BUILDER = CPULionBuilder
    _STATE_KEYS = ("exp_avg",)
    _DEEPSPEED_UNUSED = ("exp_avg_sq",)  # DeepSpeed's Lion saves it, never reads it

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        betas = check_betas("CPULion", betas, closed=True)
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize))

    def _update(self, group, params, grads, states, copies, steps) -> None:
        beta1, beta2 = group["betas"]
        cpu_lion_step_(params, grads, states[0], copies, float(group["lr"]), float(beta1), float(beta2),
                       float(group["weight_decay"]), bool(group["maximize"]))


class DeepSpeedCPULion(DeepSpeedCPUOptimizer, CPULion):
    """DeepSpeed's ``DeepSpeedCPULion``: its defaults (lr 1e-3, betas (0.9, 0.999), unlike ``CPULion``'s),
    ``opt_id``, ``fp32_optimizer_states`` and state_dicts in DeepSpeed's layout (int ``step``)."""

    optimizer_id = 0

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0, fp32_optimizer_states=True):
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay)
        self._deepspeed_setup(fp32_optimizer_states)
