"""CPU Adagrad: the ``accelops::cpu_adagrad_step_`` op and the ``CPUAdagrad`` optimizer.

The op runs the ``cpu_adagrad`` extension (built on first use) or, when it cannot be loaded or
``ACCELOPS_CPU_OPS_FALLBACK=1`` is set, a pure-torch step with torch.optim.Adagrad semantics.
Importing this module defines the op; it builds nothing.
"""
from typing import List

import torch
from torch import Tensor

from ..cpu_optim_validate import caller_checked, check_step
from ..cpu_optimizer_base import CPUOptimizerBase
from ..loader import CPU_FALLBACK_ENV, kernel_loader

__all__ = ["CPUAdagrad", "cpu_adagrad_step_"]


def _adagrad_torch_(params, grads, state_sums, param_copies, steps, lr, lr_decay, eps, weight_decay,
                    maximize) -> None:
    """Pure-torch step, torch.optim.Adagrad order of operations, fp32 math and state."""
    copies = param_copies or [None] * len(params)
    for p, g, s, c, step in zip(params, grads, state_sums, copies, steps):
        p32 = p.float()
        g32 = -g.float() if maximize else g.float()
        if weight_decay != 0.0:
            g32 = g32.add(p32, alpha=weight_decay)
        clr = lr / (1.0 + (step - 1.0) * lr_decay)
        s.addcmul_(g32, g32, value=1.0)
        p32.addcdiv_(g32, s.sqrt().add_(eps), value=-clr)
        if p32 is not p:
            p.copy_(p32)
        if c is not None:
            c.copy_(p32)


def _check(cpu: bool, params, grads, state_sums, param_copies, steps) -> None:
    """The op's arguments through the CPU optimizers' one validator."""
    states = [("state_sums", state_sums)]
    check_step("cpu_adagrad_step_", params, grads, states, param_copies, steps, cpu=cpu)


@torch.library.custom_op("accelops::cpu_adagrad_step_", mutates_args=("params", "state_sums", "param_copies"))
def cpu_adagrad_step_(params: List[Tensor], grads: List[Tensor], state_sums: List[Tensor],
                      param_copies: List[Tensor], steps: List[float], lr: float, lr_decay: float, eps: float,
                      weight_decay: float, maximize: bool) -> None:
    """One Adagrad step over all tensors, in place (float32 ``state_sums``; ``param_copies`` empty or
    one bf16/fp16 copy per param, overwritten). Default implementation (non-CPU devices): pure torch."""
    _check(False, params, grads, state_sums, param_copies, steps)
    _adagrad_torch_(params, grads, state_sums, param_copies, steps, lr, lr_decay, eps, weight_decay, maximize)


@cpu_adagrad_step_.register_kernel("cpu")
def _cpu_adagrad_step_cpu(params, grads, state_sums, param_copies, steps, lr, lr_decay, eps, weight_decay,
                          maximize) -> None:
    if not caller_checked():  # a direct call; the optimizers checked their arguments already
        _check(True, params, grads, state_sums, param_copies, steps)
    module = kernel_loader("CPUAdagradBuilder", fallback_env=CPU_FALLBACK_ENV).module()
    fn = module.adagrad_step if module is not None else _adagrad_torch_
    fn(params, grads, state_sums, param_copies, steps, lr, lr_decay, eps, weight_decay, maximize)


@cpu_adagrad_step_.register_fake
def _cpu_adagrad_step_fake(params, grads, state_sums, param_copies, steps, lr, lr_decay, eps, weight_decay,
                          maximize) -> None:
    _check(False, params, grads, state_sums, param_copies, steps)


class CPUAdagrad(CPUOptimizerBase):
    """Adagrad for CPU params (float32/bfloat16/float16) with float32 state under torch's keys (``sum``,
    ``step``), so a state_dict moves to ``torch.optim.Adagrad`` and back. ``step(grads=...,
    param_copies=...)`` runs the fused master-weight step; ``backend`` tells which path runs."""

    _BUILDER = "CPUAdagradBuilder"
    _STATE_KEYS = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                 maximize=False):
        for name, value in (("learning rate", lr), ("lr_decay", lr_decay), ("weight_decay", weight_decay),
                            ("initial_accumulator_value", initial_accumulator_value), ("epsilon", eps)):
            if not 0.0 <= value:
                raise ValueError(f"Invalid {name} value: {value}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=None, maximize=maximize,
                        differentiable=False, fused=None)
        self._STATE_INIT = float(initial_accumulator_value)
        super().__init__(params, defaults)

    def _update(self, group, params, grads, states, copies, steps) -> None:
        cpu_adagrad_step_(params, grads, states[0], copies, steps, float(group["lr"]), float(group["lr_decay"]),
                          float(group["eps"]), float(group["weight_decay"]), bool(group.get("maximize", False)))
