"""Multi-tensor fused Adam/AdamW: the ``accelops::fused_adam_step_`` op and the ``FusedAdam`` optimizer.

The op updates every tensor of its lists in one go. On CUDA (and ROCm) it runs the ``fused_adam``
extension (built on first use); on any other device, or when the extension cannot be built, it runs a
pure-torch implementation with ``torch.optim.Adam``/``AdamW`` semantics and warns once. Importing this
module registers the op; it builds and loads nothing until a CUDA step runs.

Bad input raises a Python TypeError/ValueError/RuntimeError that names the tensor: one validator
(``validate.py``) serves the op, its fake implementation and ``FusedAdam`` (see ``_tls`` for when it runs);
the op's own C++ checks (torch stable ABI, ``csrc/cuda/adam/fused_adam.cpp``) are a last line with constant
messages: a formatted TORCH_CHECK message once segfaulted in one deployment (a mismatched C++ runtime), and
the Python validator names the culprit anyway.
"""
import threading
import warnings
from typing import List, Optional

import torch
from torch import Tensor

from .._distinct_params import DistinctParamsMixin
from ..adam_reference import adam_update_
from ..loader import callers_stacklevel, kernel_loader
from ..optim_args import AdamWModeAttribute, check_betas, check_saved_tensor, keep_group_settings
from .build import FusedAdamBuilder
from .validate import check_state, check_step, optimizer_labels

__all__ = ["FusedAdam", "fused_adam_step_"]

_warned = set()
_LOADER = kernel_loader(FusedAdamBuilder, "FusedAdam: the fused_adam CUDA op is unavailable ({reason}); using the torch "
                                          "fallback")


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=callers_stacklevel())  # names the user's line


def _load_cuda_module():
    """The built ``fused_adam`` extension, or None (with a one-time warning) when it cannot be built."""
    return _LOADER.module()


# fast_path is set (per thread) by FusedAdam.step around its own op calls. Then the CUDA kernel does not
# validate in Python first: the C++ op checks every input itself (constant-message STD_TORCH_CHECKs, which
# raise RuntimeError) before it launches anything, and on such an error
# check_step runs to raise the clear Python error. That keeps the per-step path free of
# per-tensor Python checks. Direct calls of the op always validate in Python first.
_tls = threading.local()


def _adam_torch_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                 adam_w_mode, bias_correction, grad_scale, found_inf) -> None:
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
    check_step(params, grads, exp_avgs, exp_avg_sqs, steps, grad_scale, found_inf)  # no C++ checks here
    device = params[0].device.type if params else "cpu"
    _warn_once(f"fallback:{device}", f"FusedAdam: no fused kernel for device '{device}'; using the torch fallback")
    _adam_torch_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, adam_w_mode,
                 bias_correction, grad_scale, found_inf)


@fused_adam_step_.register_kernel("cuda")
def _fused_adam_step_cuda(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                          adam_w_mode, bias_correction, grad_scale=None, found_inf=None) -> None:
    args = (params, grads, exp_avgs, exp_avg_sqs, steps, grad_scale, found_inf)
    fast = getattr(_tls, "fast_path", False)
    if not fast:  # a direct call: bad input raises here, before the extension sees it
        check_step(*args)
    module = _load_cuda_module()
    if module is None:
        if fast:
            check_step(*args)  # the torch fallback has no C++ checks
        _adam_torch_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, adam_w_mode,
                     bias_correction, grad_scale, found_inf)
        return
    try:
        module.fused_adam_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                               adam_w_mode, bias_correction, grad_scale, found_inf)
    except RuntimeError:
        check_step(*args)  # name the bad tensor (the C++ message is a constant string)
        raise


@fused_adam_step_.register_fake
def _fused_adam_step_fake(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                          adam_w_mode, bias_correction, grad_scale=None, found_inf=None) -> None:
    check_step(params, grads, exp_avgs, exp_avg_sqs, steps, grad_scale, found_inf)
    return None


class UnsupportedOptionError(ValueError, RuntimeError):
    """An option FusedAdam does not implement; also a ``RuntimeError``, the type DeepSpeed's FusedAdam raises."""


class FusedAdam(AdamWModeAttribute, DistinctParamsMixin, torch.optim.Optimizer):
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
        if state_dtype not in (None, torch.float32):
            raise ValueError(f"state_dtype must be None (param dtype) or torch.float32, got {state_dtype}")
        # decoupled_weight_decay is torch's group key for adam_w_mode: state_dicts load into torch.optim.Adam(W).
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=bool(adam_w_mode))
        super().__init__(params, defaults)
        self.set_grad_none = set_grad_none
        self.state_dtype = state_dtype

    def _devices(self):
        return {p.device.type for group in self.param_groups for p in group["params"]}

    @property
    def backend(self) -> str:
        """``"kernel"`` when every param is on a CUDA/ROCm device and the fused_adam op loads (it loads on first
        use), else ``"torch"`` (the pure-torch step; see ``backend_reason``)."""
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
        want = self.state_dtype or p.dtype
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros_like(p, dtype=want, memory_format=torch.contiguous_format)
        state["exp_avg_sq"] = torch.zeros_like(p, dtype=want, memory_format=torch.contiguous_format)

    def __setstate__(self, state):
        """Fill in FusedAdam's group keys for groups that come from torch.optim.Adam/AdamW state_dicts."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("bias_correction", True)
            group.setdefault("decoupled_weight_decay", self.defaults["decoupled_weight_decay"])

    def _refuse_foreign_state(self, state_dict) -> None:
        """Raise before anything is loaded for options FusedAdam cannot honour or state of other params."""
        for g, group in enumerate(state_dict["param_groups"]):
            for option in ("amsgrad", "maximize"):
                if group.get(option):
                    raise ValueError(f"FusedAdam: group {g} of the state_dict has {option}=True, which FusedAdam "
                                     f"does not support")
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for pid, p in zip(ids, params):
            saved = state_dict["state"].get(pid)
            if saved is None:
                continue
            missing = {"step", "exp_avg", "exp_avg_sq"} - set(saved)
            if missing:
                raise ValueError(f"FusedAdam: state of param {pid} lacks {sorted(missing)}: a state_dict of "
                                 f"another optimizer?")
            for key in ("exp_avg", "exp_avg_sq"):
                if tuple(check_saved_tensor("FusedAdam", saved[key], key, pid).shape) != tuple(p.shape):
                    raise ValueError(f"FusedAdam: state {key!r} of param {pid} has shape {tuple(saved[key].shape)}, "
                                     f"the param {tuple(p.shape)}: a state_dict of another model?")

    @staticmethod
    def _with_param_steps(state_dict):
        """Old DeepSpeed FusedAdam checkpoints keep one ``step`` per group: give it to each param's state."""
        if not any("step" in group for group in state_dict["param_groups"]):
            return state_dict
        state = dict(state_dict["state"])
        for group in state_dict["param_groups"]:
            for pid in group["params"]:
                if pid in state and "step" not in state[pid] and "step" in group:
                    state[pid] = {**state[pid], "step": group["step"]}
        return {**state_dict, "state": state}

    def load_state_dict(self, state_dict):
        """Load like torch, but keep the saved state's precision: torch casts state to the param dtype,
        which would round fp32 state of 16-bit params; ``step`` goes to the param's device. State of
        other params, or options FusedAdam lacks (amsgrad, maximize), are refused before anything changes."""
        state_dict = self._with_param_steps(state_dict)
        self._refuse_foreign_state(state_dict)
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        saved = state_dict["state"]
        before = [dict(group) for group in self.param_groups]
        super().load_state_dict(state_dict)
        keep_group_settings("FusedAdam", self.param_groups, before, state_dict["param_groups"],
                            ("decoupled_weight_decay",))
        params = [p for group in self.param_groups for p in group["params"]]
        for k, (pid, p) in enumerate(zip(ids, params)):
            if pid not in saved:
                continue
            state, want = self.state[p], self.state_dtype or p.dtype
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = saved[pid][key].to(device=p.device, dtype=want, memory_format=torch.contiguous_format,
                                                copy=True)
            state["step"] = torch.as_tensor(saved[pid]["step"], dtype=torch.float32).to(p.device, copy=True)
            labels = optimizer_labels(lambda _: k, "of the loaded state_dict")
            check_state(labels, k, p, state["exp_avg"], state["exp_avg_sq"], state["step"], p.device, first=k)

    def _group_tensors(self, group):
        """(params, grads, exp_avgs, exp_avg_sqs, steps) of a group's params that have grads, unchecked:
        the op checks them (see ``_tls``) and ``_explain_bad_group`` names the culprit on failure."""
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        state_of = self.state
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            state = state_of[p]
            if not state:
                self._init_state(p, state)
            params.append(p)
            grads.append(g)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return params, grads, exp_avgs, exp_avg_sqs, steps

    def _explain_bad_group(self, group):
        """Raise the validator's clear error naming the first param (index in its group) whose grad or state the
        op cannot take; return quietly when every param looks fine."""
        indexes = [i for i, p in enumerate(group["params"]) if p.grad is not None]
        if not indexes:
            return
        params = [group["params"][i] for i in indexes]
        states = [self.state[p] for p in params]
        check_step(params, [p.grad for p in params], [s.get("exp_avg") for s in states],
                   [s.get("exp_avg_sq") for s in states], [s.get("step") for s in states],
                   labels=optimizer_labels(lambda k: indexes[k]))

    @staticmethod
    def _amp_scalar(t, name, device):
        """GradScaler's scale or found-inf flag as a one-element float32 tensor on ``device``."""
        out = t.to(device=device, dtype=torch.float32)
        if out.numel() != 1:
            raise ValueError(f"FusedAdam: {name} must have one element, got shape {tuple(t.shape)}")
        return out

    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step over every param with a gradient; returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = self._group_tensors(group)
            if not params:
                continue
            device = params[0].device
            beta1, beta2 = group["betas"]
            gs = self._amp_scalar(grad_scale, "grad_scale", device) if grad_scale is not None else None
            fi = self._amp_scalar(found_inf, "found_inf", device) if found_inf is not None else None
            counted = False
            _tls.fast_path = True
            try:
                torch._foreach_add_(steps, 1)
                counted = True
                fused_adam_step_(params, grads, exp_avgs, exp_avg_sqs, steps, float(group["lr"]), float(beta1),
                                 float(beta2), float(group["eps"]), float(group["weight_decay"]),
                                 bool(group["decoupled_weight_decay"]), bool(group["bias_correction"]), gs, fi)
            except (RuntimeError, TypeError, ValueError):
                # Bad input is rejected before anything is updated: undo the step count, then name the
                # culprit by its index in the group (the op's message counts params with grads only).
                if counted:
                    torch._foreach_sub_(steps, 1)
                self._explain_bad_group(group)
                raise
            finally:
                _tls.fast_path = False
            if fi is not None:  # a skipped step is not counted (GradScaler may sum flags: 2.0 is one skip)
                skipped = (fi != 0).to(torch.float32)
                torch._foreach_sub_(steps, [skipped] * len(steps))
        return loss
