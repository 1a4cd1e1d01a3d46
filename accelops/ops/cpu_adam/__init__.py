"""CPU Adam/AdamW: the ``accelops::cpu_adam_step_`` op and the ``CPUAdam`` optimizer.

The op runs the ``cpu_adam`` extension (SIMD + OpenMP, built on first use) or, when it cannot be
loaded or ``ACCELOPS_CPU_OPS_FALLBACK=1`` is set, a pure-torch step with the same semantics (one-time
warning on a failed load). Importing this module defines the op; it builds nothing.
"""
from typing import List

import torch
from torch import Tensor

from ..adam_reference import adam_rollback_, adam_update_
from ..cpu_optim_validate import caller_checked, check_step
from ..cpu_optimizer_base import CPUOptimizerBase, DeepSpeedCPUOptimizer
from ..loader import CPU_FALLBACK_ENV, kernel_loader
from ..optim_args import AdamWModeAttribute, check_betas
from .build import CPUAdamBuilder

__all__ = ["CPUAdam", "DeepSpeedCPUAdam", "cpu_adam_step_"]


def _adam_torch_(params, grads, exp_avgs, exp_avg_sqs, param_copies, steps, lr, beta1, beta2, eps, weight_decay,
                 adamw, bias_correction, maximize) -> None:
    """Pure-torch step, torch.optim.Adam/AdamW order of operations, fp32 math and state."""
    copies = param_copies or [None] * len(params)
    for p, g, m, v, c, step in zip(params, grads, exp_avgs, exp_avg_sqs, copies, steps):
        p32 = p.float()
        g32 = -g.float() if maximize else g.float()
        adam_update_(p32, g32, m, v, step, lr, beta1, beta2, eps, weight_decay, adamw, bias_correction)
        if p32 is not p:
            p.copy_(p32)
        if c is not None:
            c.copy_(p32)


def _check(cpu: bool, params, grads, exp_avgs, exp_avg_sqs, param_copies, steps) -> None:
    """The op's arguments through the CPU optimizers' one validator."""
    states = [("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs)]
    check_step("cpu_adam_step_", params, grads, states, param_copies, steps, cpu=cpu)


@torch.library.custom_op("accelops::cpu_adam_step_", mutates_args=("params", "exp_avgs", "exp_avg_sqs",
                                                                   "param_copies"))
def cpu_adam_step_(params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor],
                   param_copies: List[Tensor], steps: List[float], lr: float, beta1: float, beta2: float, eps: float,
                   weight_decay: float, adamw: bool, bias_correction: bool, maximize: bool) -> None:
    """One Adam (L2 decay) or AdamW (``adamw=True``) step over all tensors, in place.

    ``exp_avgs``/``exp_avg_sqs`` are float32; params fp32/bf16/fp16; grads fp32/bf16/fp16. ``steps`` are
    each tensor's step count after this step. ``param_copies`` is empty or one bf16/fp16 tensor per
    param, overwritten with the updated params. Default implementation (non-CPU devices): pure torch.
    """
    _check(False, params, grads, exp_avgs, exp_avg_sqs, param_copies, steps)
    _adam_torch_(params, grads, exp_avgs, exp_avg_sqs, param_copies, steps, lr, beta1, beta2, eps, weight_decay,
                 adamw, bias_correction, maximize)


@cpu_adam_step_.register_kernel("cpu")
def _cpu_adam_step_cpu(params, grads, exp_avgs, exp_avg_sqs, param_copies, steps, lr, beta1, beta2, eps,
                       weight_decay, adamw, bias_correction, maximize) -> None:
    if not caller_checked():  # a direct call; the optimizers checked their arguments already
        _check(True, params, grads, exp_avgs, exp_avg_sqs, param_copies, steps)
    module = kernel_loader(CPUAdamBuilder, fallback_env=CPU_FALLBACK_ENV).module()
    fn = module.adam_step if module is not None else _adam_torch_
    fn(params, grads, exp_avgs, exp_avg_sqs, param_copies, steps, lr, beta1, beta2, eps, weight_decay, adamw,
       bias_correction, maximize)


@cpu_adam_step_.register_fake
def _cpu_adam_step_fake(params, grads, exp_avgs, exp_avg_sqs, param_copies, steps, lr, beta1, beta2, eps,
                       weight_decay, adamw, bias_correction, maximize) -> None:
    _check(False, params, grads, exp_avgs, exp_avg_sqs, param_copies, steps)


class CPUAdam(AdamWModeAttribute, CPUOptimizerBase):
    """Adam (``adamw_mode=False``: L2 weight decay) or AdamW (default) for CPU params.

    Params may be float32, bfloat16 or float16; the state (``exp_avg``, ``exp_avg_sq``, ``step``: torch's
    keys) is float32, so a state_dict loads into ``torch.optim.Adam``/``AdamW`` and back. ``adamw_mode`` is
    kept per group as torch's ``decoupled_weight_decay``. ``step(grads=..., param_copies=...)`` runs the
    fused master-weight step (see ``CPUOptimizerBase.step``). ``backend`` tells which path runs.
    """

    _BUILDER = CPUAdamBuilder
    _STATE_KEYS = ("exp_avg", "exp_avg_sq")
    _RULE_KEYS = ("decoupled_weight_decay",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, adamw_mode=True,
                 bias_correction=True, amsgrad=False, maximize=False):
        if amsgrad:
            raise ValueError("CPUAdam does not support amsgrad=True")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        betas = check_betas("CPUAdam", betas)
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=False,
                        maximize=maximize, foreach=None, capturable=False, differentiable=False, fused=None,
                        decoupled_weight_decay=bool(adamw_mode), bias_correction=bias_correction)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # groups loaded from torch.optim lack our keys
            group.setdefault("bias_correction", True)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("maximize", False)

    def _update(self, group, params, grads, states, copies, steps) -> None:
        beta1, beta2 = group["betas"]
        cpu_adam_step_(params, grads, states[0], states[1], copies, steps, float(group["lr"]), float(beta1),
                       float(beta2), float(group["eps"]), float(group["weight_decay"]),
                       bool(group["decoupled_weight_decay"]), bool(group["bias_correction"]),
                       bool(group["maximize"]))

    def _subgroup_param(self, who: str):
        """The one param with a gradient (ZeRO-Offload gives each sub group's optimizer call one flat param)."""
        found = [(group, i, p) for group in self.param_groups for i, p in enumerate(group["params"])
                 if p.grad is not None]
        if len(found) != 1:
            raise ValueError(f"{self._name()}.{who}: expected exactly one param with a gradient (the sub group's flat "
                             f"param), found {len(found)}")
        group, i, p = found[0]
        return group, f"param {i} of the sub group (shape {tuple(p.shape)})", p

    @torch.no_grad()
    def step_subgroup(self, subgroup_id: int, closure=None):
        """One step of the sub group ``subgroup_id`` (DeepSpeed's ZeRO-Offload call): the one param with a
        gradient is updated with the state kept under ``self.state[subgroup_id]``. Returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group, where, p = self._subgroup_param("step_subgroup")
        g = self._check(where, p, p.grad, None)
        state = self._state_for(p, key=subgroup_id)
        self._check_state(where, p, state)
        state["step"] += 1
        self._run_update(group, [p], [g], [[state[key]] for key in self._STATE_KEYS], [], [float(state["step"])])
        return loss

    @torch.no_grad()
    def rollback_subgroup(self, sub_group_id: int, closure=None):
        """Undo the last ``step_subgroup(sub_group_id)`` (DeepSpeed's overflow path): the param and the sub
        group's moments return to their values before it (up to float32 rounding) and its step count drops by
        one. The param's gradient must be the one that step used. ``RuntimeError`` with DeepSpeed's message when
        the sub group was never stepped or its step count is 0."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        state = self.state.get(sub_group_id)
        if not state:  # DeepSpeed's two messages (callers match them), then why
            raise RuntimeError(f"{self._name()}: Cannot rollback optimizer state for sub_group_id {sub_group_id} as "
                               f"it has not been initialized: it has no step to undo")
        if float(state["step"]) <= 0:
            raise RuntimeError(f"{self._name()}: Cannot rollback sub_group_id {sub_group_id}: step count is "
                               f"{int(state['step'])}, so it has no step to undo")
        group, where, p = self._subgroup_param("rollback_subgroup")
        g = self._check(where, p, p.grad, None)
        self._check_state(where, p, state)
        beta1, beta2 = group["betas"]
        p32, m, v = p.float(), state["exp_avg"].float(), state["exp_avg_sq"].float()
        g32 = -g.float() if group["maximize"] else g.float()
        adam_rollback_(p32, g32, m, v, float(state["step"]), float(group["lr"]), float(beta1), float(beta2),
                       float(group["eps"]), float(group["weight_decay"]), bool(group["decoupled_weight_decay"]),
                       bool(group["bias_correction"]))
        for target, value in ((p, p32), (state["exp_avg"], m), (state["exp_avg_sq"], v)):
            if value is not target:
                target.copy_(value)
        state["step"] -= 1
        return loss


class DeepSpeedCPUAdam(DeepSpeedCPUOptimizer, CPUAdam):
    """DeepSpeed's ``DeepSpeedCPUAdam``: its positional order and defaults, ``opt_id``, ``adam_w_mode`` and
    ``fp32_optimizer_states`` (False keeps ``exp_avg``/``exp_avg_sq`` in the param dtype; the math stays fp32),
    and state_dicts in DeepSpeed's layout. ``amsgrad=True`` is refused (DeepSpeed ignores it silently)."""

    optimizer_id = 0

    def __init__(self, model_params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, adamw_mode=True, fp32_optimizer_states=True):
        super().__init__(model_params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adamw_mode=adamw_mode,
                         bias_correction=bias_correction, amsgrad=amsgrad)
        self._deepspeed_setup(fp32_optimizer_states)
