"""Multi-tensor fused Lion: the ``accelops::fused_lion_step_`` op and the ``FusedLion`` optimizer.

Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), per element, in fp32 math (each
operation rounded on its own, no fused multiply-add)::

    c = beta1 * m + (1 - beta1) * g
    p = p * (1 - lr * weight_decay) - lr * sign(c)      # sign(0) = sign(nan) = 0, as torch.sign
    m = beta2 * m + (1 - beta2) * g

The op updates every tensor of its lists in one go. On CUDA (and ROCm) it runs the ``fused_lion``
extension (built on first use); on any other device, or when the extension cannot be built, it runs the
same math in pure torch and warns once. Importing this module registers the op; it builds and loads
nothing until a CUDA step runs.

Bad input raises a Python TypeError/ValueError/RuntimeError that names the tensor: one validator
(``validate.py``) serves the op, its fake implementation and ``FusedLion``; the extension's own checks have
constant messages only (see ``accelops.ops.fused_adam`` for why).
"""
import threading
import warnings
from typing import List, Optional

import torch
from torch import Tensor

from .._distinct_params import DistinctParamsMixin
from ..loader import callers_stacklevel, kernel_loader
from ..optim_args import check_betas, check_saved_tensor, keep_group_settings
from .build import FusedLionBuilder
from .validate import check_state, check_step, optimizer_labels

__all__ = ["FusedLion", "fused_lion_step_"]

_warned = set()
_LOADER = kernel_loader(FusedLionBuilder, "FusedLion: the fused_lion CUDA op is unavailable ({reason}); using the torch "
                                          "fallback")


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=callers_stacklevel())  # names the user's line


def _load_cuda_module():
    """The built ``fused_lion`` extension, or None (with a one-time warning) when it cannot be built."""
    return _LOADER.module()


# fast_path is set (per thread) by FusedLion.step around its op calls: then the CUDA kernel skips the
# Python checks (the extension checks every input itself before launching anything, and on its error
# check_step runs to raise the clear Python error). Direct calls of the op always validate in Python first.
_tls = threading.local()


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


@torch.library.custom_op("accelops::fused_lion_step_", mutates_args=("params", "exp_avgs"))
def fused_lion_step_(params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], lr: float, beta1: float,
                     beta2: float, weight_decay: float) -> None:
    """One Lion step over all tensors, in place (``params`` and ``exp_avgs``; see the module docstring).

    Params are float32, float16 or bfloat16, each grad of its param's dtype and shape, each ``exp_avg``
    float32 or the param's dtype; all on one device and contiguous. This default implementation serves
    every device without a kernel (pure torch, one-time warning).
    """
    check_step(params, grads, exp_avgs)  # no C++ checks here
    device = params[0].device.type if params else "cpu"
    _warn_once(f"fallback:{device}", f"FusedLion: no fused kernel for device '{device}'; using the torch fallback")
    _lion_torch_(params, grads, exp_avgs, lr, beta1, beta2, weight_decay)


@fused_lion_step_.register_kernel("cuda")
def _fused_lion_step_cuda(params, grads, exp_avgs, lr, beta1, beta2, weight_decay) -> None:
    fast = getattr(_tls, "fast_path", False)
    if not fast:  # a direct call: bad input raises here, before the extension sees it
        check_step(params, grads, exp_avgs)
    module = _load_cuda_module()
    if module is None:
        if fast:
            check_step(params, grads, exp_avgs)  # the torch fallback has no C++ checks
        _lion_torch_(params, grads, exp_avgs, lr, beta1, beta2, weight_decay)
        return
    try:
        module.fused_lion_step(params, grads, exp_avgs, lr, beta1, beta2, weight_decay)
    except RuntimeError:
        check_step(params, grads, exp_avgs)  # name the bad tensor (the C++ message is a constant string)
        raise


@fused_lion_step_.register_fake
def _fused_lion_step_fake(params, grads, exp_avgs, lr, beta1, beta2, weight_decay) -> None:
    check_step(params, grads, exp_avgs)
    return None


class FusedLion(DistinctParamsMixin, torch.optim.Optimizer):
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

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, set_grad_none=True, state_dtype=None):
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        betas = check_betas("FusedLion", betas, closed=True)
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if state_dtype not in (None, torch.float32):
            raise ValueError(f"state_dtype must be None (param dtype) or torch.float32, got {state_dtype}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        self.set_grad_none = set_grad_none
        self.state_dtype = state_dtype

    def _devices(self):
        return {p.device.type for group in self.param_groups for p in group["params"]}

    @property
    def backend(self) -> str:
        """``"kernel"`` when every param is on a CUDA/ROCm device and the fused_lion op loads (it loads on
        first use), else ``"torch"`` (the pure-torch step; see ``backend_reason``)."""
        return "kernel" if self._torch_reason() is None else "torch"

    @property
    def backend_reason(self) -> Optional[str]:
        """Why this path runs: why the pure-torch step runs, or, while the fused kernel does, where its module
        was loaded from (prebuilt, JIT cache, JIT build)."""
        return self._torch_reason() or _LOADER.kernel_reason

    def _torch_reason(self) -> Optional[str]:
        """Why the pure-torch step runs, or None while the fused kernel does."""
        others = sorted(self._devices() - {"cuda"})
        if others:
            return f"no fused kernel for device {', '.join(others)}"
        if _LOADER.module() is None:
            return _LOADER.reason
        return None

    def zero_grad(self, set_to_none=None):
        """Clear grads; ``set_to_none`` defaults to the constructor's ``set_grad_none``."""
        super().zero_grad(set_to_none=self.set_grad_none if set_to_none is None else set_to_none)

    def _init_state(self, p, state):
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros_like(p, dtype=self.state_dtype or p.dtype,
                                            memory_format=torch.contiguous_format)

    def _refuse_foreign_state(self, state_dict) -> None:
        """Raise before anything is loaded for options FusedLion cannot honour or state of other params."""
        for g, group in enumerate(state_dict["param_groups"]):
            if group.get("maximize"):
                raise ValueError(f"FusedLion: group {g} of the state_dict has maximize=True, which FusedLion does "
                                 f"not support")
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for pid, p in zip(ids, params):
            saved = state_dict["state"].get(pid)
            if saved is None:
                continue
            missing = {"step", "exp_avg"} - set(saved)
            if missing:
                raise ValueError(f"FusedLion: state of param {pid} lacks {sorted(missing)}: a state_dict of another "
                                 f"optimizer?")
            m = check_saved_tensor("FusedLion", saved["exp_avg"], "exp_avg", pid)
            if tuple(m.shape) != tuple(p.shape):
                raise ValueError(f"FusedLion: state 'exp_avg' of param {pid} has shape {tuple(m.shape)}, the param "
                                 f"{tuple(p.shape)}: a state_dict of another model?")

    @staticmethod
    def _with_param_steps(state_dict):
        """DeepSpeed's FusedLion starts a param's ``step`` from its group's ``step`` when the group has one:
        give that to each param's state that lacks its own."""
        if not any("step" in group for group in state_dict["param_groups"]):
            return state_dict
        state = dict(state_dict["state"])
        for group in state_dict["param_groups"]:
            for pid in group["params"]:
                if pid in state and "step" not in state[pid] and "step" in group:
                    state[pid] = {**state[pid], "step": group["step"]}
        return {**state_dict, "state": state}

    def load_state_dict(self, state_dict):
        """Load like torch, but keep the saved ``exp_avg``'s precision up to ``state_dtype`` (torch casts state
        to the param dtype); ``step`` (an int in DeepSpeed's) becomes a float32 tensor on the param's device.
        State of other params, or maximize=True, are refused before anything changes."""
        state_dict = self._with_param_steps(state_dict)
        self._refuse_foreign_state(state_dict)
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        saved = state_dict["state"]
        before = [dict(group) for group in self.param_groups]
        super().load_state_dict(state_dict)
        keep_group_settings("FusedLion", self.param_groups, before, state_dict["param_groups"], ())
        params = [p for group in self.param_groups for p in group["params"]]
        for k, (pid, p) in enumerate(zip(ids, params)):
            if pid not in saved:
                continue
            m = saved[pid]["exp_avg"].to(device=p.device, dtype=self.state_dtype or p.dtype,
                                         memory_format=torch.contiguous_format, copy=True)
            step = torch.as_tensor(saved[pid]["step"], dtype=torch.float32).to(p.device, copy=True)
            self.state[p] = {"step": step, "exp_avg": m}  # drops DeepSpeedCPULion's unused exp_avg_sq
            check_state(optimizer_labels(lambda _: k, "of the loaded state_dict"), k, p, m, p.device, first=k)

    def _group_tensors(self, group):
        """(params, grads, exp_avgs, steps) of a group's params that have grads, unchecked: the op checks them
        (see ``_tls``) and ``_explain_bad_group`` names the culprit on failure."""
        params, grads, exp_avgs, steps = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                self._init_state(p, state)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            steps.append(state["step"])
        return params, grads, exp_avgs, steps

    def _explain_bad_group(self, group):
        """Raise the validator's clear error naming the first param (index in its group) whose grad or state
        the op cannot take; return quietly when every param looks fine."""
        indexes = [i for i, p in enumerate(group["params"]) if p.grad is not None]
        params = [group["params"][i] for i in indexes]
        check_step(params, [p.grad for p in params], [self.state[p].get("exp_avg") for p in params],
                   labels=optimizer_labels(lambda k: indexes[k]))

    @torch.no_grad()
    def step(self, closure=None):
        """One Lion step over every param with a gradient; returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, steps = self._group_tensors(group)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            _tls.fast_path = True
            try:
                fused_lion_step_(params, grads, exp_avgs, float(group["lr"]), float(beta1), float(beta2),
                                 float(group["weight_decay"]))
            except (RuntimeError, TypeError, ValueError):
                # Bad input is rejected before anything is updated; name the culprit by its index in the
                # group (the op's message counts params with grads only).
                self._explain_bad_group(group)
                raise
            finally:
                _tls.fast_path = False
            torch._foreach_add_(steps, 1)
        return loss
