"""CPU Adagrad: the ``accelops::cpu_adagrad_step_`` op and the ``CPUAdagrad`` optimizer.

The op runs the ``cpu_adagrad`` extension (built on first use) or, when it cannot be loaded or
``ACCELOPS_CPU_OPS_FALLBACK=1`` is set, a pure-torch step with torch.optim.Adagrad semantics.
Importing this module defines the op; it builds nothing.
"""
from typing import List

import torch
from torch import Tensor

from ..cpu_optim_validate import DTYPES, NotOnCPUError, caller_checked, check_step
from ..cpu_optimizer_base import CPUOptimizerBase, DeepSpeedCPUOptimizer
from ..loader import CPU_FALLBACK_ENV, kernel_loader
from .build import CPUAdagradBuilder

__all__ = ["CPUAdagrad", "DeepSpeedCPUAdagrad", "cpu_adagrad_step_"]


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
    module = kernel_loader(CPUAdagradBuilder, fallback_env=CPU_FALLBACK_ENV).module()
    fn = module.adagrad_step if module is not None else _adagrad_torch_
    fn(params, grads, state_sums, param_copies, steps, lr, lr_decay, eps, weight_decay, maximize)


@cpu_adagrad_step_.register_fake
def _cpu_adagrad_step_fake(params, grads, state_sums, param_copies, steps, lr, lr_decay, eps, weight_decay,
                          maximize) -> None:
    _check(False, params, grads, state_sums, param_copies, steps)


class CPUAdagrad(CPUOptimizerBase):
    """Adagrad for CPU params (float32/bfloat16/float16) with float32 state under torch's keys (``sum``,
    ``step``), so a state_dict moves to ``torch.optim.Adagrad`` and back (DeepSpeed's ``exp_avg_sq`` loads
    too). ``step(grads=..., param_copies=...)`` runs the fused master-weight step; a sparse gradient
    updates only the entries it holds; ``backend`` tells which path runs."""

    _BUILDER = CPUAdagradBuilder
    _STATE_KEYS = ("sum",)
    _DEEPSPEED_KEYS = {"sum": "exp_avg_sq"}

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

    @torch.no_grad()
    def step(self, closure=None, *, grads=None, param_copies=None):
        """As ``CPUOptimizerBase.step``; in addition a sparse gradient (``nn.Embedding(sparse=True)``) updates
        only the entries it holds, weight decay included, as DeepSpeed's CPU Adagrad does (torch's refuses
        weight decay there). A param with a sparse gradient takes no param copy. Every param is checked
        before anything is updated."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        flat = [(group, i, p) for group in self.param_groups for i, p in enumerate(group["params"])]
        given = grads if grads is not None else [p.grad for _, _, p in flat]
        if not isinstance(given, (list, tuple)) or len(given) != len(flat):
            super().step(grads=grads, param_copies=param_copies)  # raises, naming the mistake
            return loss
        sparse = [k for k, g in enumerate(given) if isinstance(g, Tensor) and g.layout != torch.strided]
        for k in sparse:
            group, i, p = flat[k]
            self._check_sparse(f"param {i} (shape {tuple(p.shape)})", p, given[k],
                               param_copies[k] if param_copies is not None else None)
        dense = [None if k in sparse else g for k, g in enumerate(given)]
        copies = None if param_copies is None else [None if k in sparse else c for k, c in enumerate(param_copies)]
        super().step(grads=dense, param_copies=copies)
        for k in sparse:
            group, i, p = flat[k]
            self._sparse_update(group, f"param {i} (shape {tuple(p.shape)})", p, given[k])
        return loss

    def _check_sparse(self, where: str, p: Tensor, g: Tensor, copy) -> None:
        owner = self._name()
        if p.device.type != "cpu" or g.device.type != "cpu":
            raise NotOnCPUError(f"{owner}: {where} (or its grad) is on '{p.device}'/'{g.device}'; {owner} updates "
                                f"CPU tensors only")
        if not g.is_sparse:
            raise RuntimeError(f"{owner}: {where} has a {g.layout} gradient; supported: dense (strided) or sparse COO")
        if p.dtype not in DTYPES or g.dtype != p.dtype:
            raise TypeError(f"{owner}: {where} has dtype {p.dtype} and a sparse grad of {g.dtype}; both must be one "
                            f"of float32, bfloat16, float16")
        if tuple(g.shape) != tuple(p.shape) or not p.is_contiguous():
            raise ValueError(f"{owner}: {where} must be contiguous with a sparse grad of its shape "
                             f"{tuple(p.shape)}; got a grad of shape {tuple(g.shape)}")
        if copy is not None:
            raise ValueError(f"{owner}: {where} has a sparse gradient; param_copies must be None for it")
        self._check_state(where, p, self._state_for(p))

    def _sparse_update(self, group, where: str, p: Tensor, g: Tensor) -> None:
        g = g.coalesce()  # nn.Embedding's backward leaves repeated indices uncoalesced
        index = tuple(g.indices())
        state = self._state_for(p)
        state["step"] += 1
        rows, sums = p[index], state["sum"][index]  # gathered copies of the touched entries
        self._run_update(group, [rows], [g.values().contiguous()], [[sums]], [], [float(state["step"])])
        p[index] = rows
        state["sum"][index] = sums


class DeepSpeedCPUAdagrad(DeepSpeedCPUOptimizer, CPUAdagrad):
    """DeepSpeed's ``DeepSpeedCPUAdagrad``: its order and defaults (no ``lr_decay``), ``opt_id``,
    ``fp32_optimizer_states`` (False keeps the state in the param dtype), sparse gradients, and state_dicts in
    DeepSpeed's layout (``exp_avg_sq``, int ``step``). ``amsgrad=True`` is refused (DeepSpeed ignores it)."""

    optimizer_id = 0

    def __init__(self, model_params, lr=1e-2, eps=1e-10, weight_decay=0, amsgrad=False, fp32_optimizer_states=True):
        if amsgrad:
            raise ValueError("DeepSpeedCPUAdagrad does not support amsgrad=True")
        super().__init__(model_params, lr=lr, eps=eps, weight_decay=weight_decay)
        self._deepspeed_setup(fp32_optimizer_states)
