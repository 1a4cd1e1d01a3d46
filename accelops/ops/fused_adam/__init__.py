"""Multi-tensor fused Adam/AdamW: the ``accelops::fused_adam_step_`` op and the ``FusedAdam`` optimizer.

The op updates every tensor of its lists in one go. On CUDA (and ROCm) it runs the ``fused_adam``
extension (built on first use); on any other device, or when the extension cannot be built, it runs a
pure-torch implementation with ``torch.optim.Adam``/``AdamW`` semantics and warns once. Importing this
module registers the op; it builds and loads nothing until a CUDA step runs.

Bad input raises a Python TypeError/ValueError/RuntimeError that names the tensor (see ``_tls`` for
when it is checked); the extension's own checks have constant messages only, since a formatted
TORCH_CHECK message segfaulted in one deployment (a mismatched C++ runtime).
"""
import threading
import warnings
from typing import List, Optional

import torch
from torch import Tensor

from .._distinct_params import DistinctParamsMixin
from ..loader import kernel_loader

__all__ = ["FusedAdam", "fused_adam_step_"]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_warned = set()
_LOADER = kernel_loader("FusedAdamBuilder", "FusedAdam: the fused_adam CUDA op is unavailable ({reason}); using the torch "
                                            "fallback")


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _load_cuda_module():
    """The built ``fused_adam`` extension, or None (with a one-time warning) when it cannot be built."""
    return _LOADER.module()


def _one_element_fp32(t, what, device) -> None:
    """ValueError "<what> must be a one-element float32 tensor on <device>, got ..." unless ``t`` is one."""
    if not isinstance(t, Tensor) or t.numel() != 1 or t.dtype != torch.float32 or t.device != device:
        got = f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{what} must be a one-element float32 tensor on {device}, got {got}")


def _validate_step_args(params, grads, exp_avgs, exp_avg_sqs, steps, grad_scale=None, found_inf=None) -> None:
    """Raise a clear Python error for any input the kernels do not take (any device, fake tensors too).

    Checked here so that bad input never reaches the C++ op, whose own checks are a last line only:
    list lengths, one device for every tensor, dense and contiguous tensors, supported dtypes, state
    dtype (float32 or the param dtype), equal shapes of param/grad/state, one-element float32 steps.
    """
    n = len(params)
    if not (len(grads) == n and len(exp_avgs) == n and len(exp_avg_sqs) == n and len(steps) == n):
        raise ValueError("fused_adam: params, grads, exp_avgs, exp_avg_sqs and steps must have the same length, got "
                         f"{len(params)}, {len(grads)}, {len(exp_avgs)}, {len(exp_avg_sqs)}, {len(steps)}")
    if n == 0:
        return
    device = params[0].device
    for i in range(n):
        p, g, m, v = params[i], grads[i], exp_avgs[i], exp_avg_sqs[i]
        for name, t in (("params", p), ("grads", g), ("exp_avgs", m), ("exp_avg_sqs", v)):
            if t.layout != torch.strided:
                raise RuntimeError(f"fused_adam: {name}[{i}] is {t.layout}; only dense (strided) tensors are "
                                   f"supported (sparse gradients are not)")
            if t.device != device:
                raise ValueError(f"fused_adam: {name}[{i}] is on {t.device} but params[0] is on {device}; all "
                                 f"tensors of one step must be on one device")
            if not t.is_contiguous():
                raise ValueError(f"fused_adam: {name}[{i}] (shape {tuple(t.shape)}) must be contiguous; the "
                                 f"update is in place and never goes through a temporary copy")
        if p.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"fused_adam: params[{i}] has dtype {p.dtype}; supported: float32, float16, bfloat16")
        if g.dtype != p.dtype:
            raise TypeError(f"fused_adam: grads[{i}] has dtype {g.dtype} but its param has {p.dtype}")
        if m.dtype not in (torch.float32, p.dtype) or v.dtype != m.dtype:
            raise TypeError(f"fused_adam: exp_avgs[{i}]/exp_avg_sqs[{i}] have dtypes {m.dtype}/{v.dtype}; the "
                            f"state must be float32 or the param dtype {p.dtype}, the same for both")
        if g.shape != p.shape or m.shape != p.shape or v.shape != p.shape:
            raise ValueError(f"fused_adam: params[{i}] has shape {tuple(p.shape)} but its grad/exp_avg/exp_avg_sq "
                             f"have {tuple(g.shape)}/{tuple(m.shape)}/{tuple(v.shape)}")
        _one_element_fp32(steps[i], f"fused_adam: steps[{i}]", device)
    if grad_scale is not None:
        _one_element_fp32(grad_scale, "fused_adam: grad_scale", device)
    if found_inf is not None:
        _one_element_fp32(found_inf, "fused_adam: found_inf", device)


# fast_path is set (per thread) by FusedAdam.step around its own op calls. Then the CUDA kernel does not
# validate in Python first: the extension checks every input itself (constant-message TORCH_CHECKs, which
# raise RuntimeError; only formatted messages crashed) before it launches anything, and on such an error
# _validate_step_args runs to raise the clear Python error. That keeps the per-step path free of
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
        if weight_decay != 0.0:
            if adam_w_mode:
                p32.mul_(1.0 - lr * weight_decay)
            else:
                g32 = g32.add(p32, alpha=weight_decay)
        m32.lerp_(g32, 1.0 - beta1)
        v32.mul_(beta2).addcmul_(g32, g32, value=1.0 - beta2)
        step_size, bc2_sqrt = lr, 1.0
        if bias_correction:
            step = float(step_t)
            step_size = lr / (1.0 - beta1**step)
            bc2_sqrt = (1.0 - beta2**step) ** 0.5
        denom = (v32.sqrt() / bc2_sqrt).add_(eps)
        p32.addcdiv_(m32, denom, value=-step_size)
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
    _validate_step_args(params, grads, exp_avgs, exp_avg_sqs, steps, grad_scale, found_inf)  # no C++ checks here
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
        _validate_step_args(*args)
    module = _load_cuda_module()
    if module is None:
        if fast:
            _validate_step_args(*args)  # the torch fallback has no C++ checks
        _adam_torch_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, adam_w_mode,
                     bias_correction, grad_scale, found_inf)
        return
    try:
        module.fused_adam_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                               adam_w_mode, bias_correction, grad_scale, found_inf)
    except RuntimeError:
        _validate_step_args(*args)  # name the bad tensor (the C++ message is a constant string)
        raise


@fused_adam_step_.register_fake
def _fused_adam_step_fake(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                          adam_w_mode, bias_correction, grad_scale=None, found_inf=None) -> None:
    _validate_step_args(params, grads, exp_avgs, exp_avg_sqs, steps, grad_scale, found_inf)
    return None


class FusedAdam(DistinctParamsMixin, torch.optim.Optimizer):
    """Adam/AdamW that updates all parameters of a group with one multi-tensor kernel.

    Args mirror DeepSpeed's FusedAdam: ``adam_w_mode=True`` decays weights decoupled (AdamW),
    ``False`` adds ``weight_decay * param`` to the gradient (Adam's L2); it is kept per group under
    torch's key ``decoupled_weight_decay``. ``state_dtype`` is None (state
    in the param dtype, as torch) or ``torch.float32`` (fp32 state for 16-bit params). State keys are
    torch's (``step``, ``exp_avg``, ``exp_avg_sq``), one step count per parameter. Works with
    ``torch.amp.GradScaler``: grads are unscaled inside the step, which is skipped on inf/nan.
    """

    _step_supports_amp_scaling = True

    def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8, adam_w_mode=True,
                 weight_decay=0.0, amsgrad=False, set_grad_none=True, state_dtype=None):
        if amsgrad:
            raise ValueError("FusedAdam does not support amsgrad")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}; each must be in [0, 1)")
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
        return "kernel" if self.backend_reason is None else "torch"

    @property
    def backend_reason(self) -> Optional[str]:
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
                if tuple(saved[key].shape) != tuple(p.shape):
                    raise ValueError(f"FusedAdam: state {key!r} of param {pid} has shape {tuple(saved[key].shape)}, "
                                     f"the param {tuple(p.shape)}: a state_dict of another model?")

    def load_state_dict(self, state_dict):
        """Load like torch, but keep the saved state's precision: torch casts state to the param dtype,
        which would round fp32 state of 16-bit params; ``step`` goes to the param's device. State of
        other params, or options FusedAdam lacks (amsgrad, maximize), are refused before anything changes."""
        self._refuse_foreign_state(state_dict)
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for k, (pid, p) in enumerate(zip(ids, params)):
            if pid not in saved:
                continue
            state, want = self.state[p], self.state_dtype or p.dtype
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = saved[pid][key].to(device=p.device, dtype=want, memory_format=torch.contiguous_format,
                                                copy=True)
            state["step"] = torch.as_tensor(saved[pid]["step"], dtype=torch.float32).to(p.device, copy=True)
            self._check_state(f"param {k} of the loaded state_dict", p, state["exp_avg"], state["exp_avg_sq"],
                              state["step"])

    @staticmethod
    def _raise_bad_param(i, p, g, device):
        where = f"FusedAdam: param {i} of its group (shape {tuple(p.shape)})"
        if g.layout != torch.strided:
            raise RuntimeError(f"{where} has a sparse gradient ({g.layout}); FusedAdam supports dense gradients only")
        if p.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"{where} has dtype {p.dtype}; supported: float32, float16, bfloat16")
        if g.dtype != p.dtype:
            raise TypeError(f"{where} has dtype {p.dtype} but its gradient has {g.dtype}")
        if p.device != device or g.device != device:
            raise ValueError(f"{where} or its gradient is on {p.device}/{g.device}, but the group's first param "
                             f"is on {device}; put all params of a group on one device")
        if g.shape != p.shape:
            raise ValueError(f"{where} has a gradient of shape {tuple(g.shape)}")
        raise ValueError(f"{where}: param and gradient must be contiguous (FusedAdam updates in place and never "
                         f"a temporary copy)")

    @staticmethod
    def _check_state(which, p, m, v, s):
        """Raise a clear error when a param's state does not fit it (e.g. a state_dict of another model,
        state left on another device after the model moved, or state edited by hand)."""
        where = f"FusedAdam: the state of {which} (shape {tuple(p.shape)}, {p.dtype}, {p.device})"
        for key, t in (("exp_avg", m), ("exp_avg_sq", v)):
            if not isinstance(t, Tensor) or t.layout != torch.strided:
                raise TypeError(f"{where}: {key} must be a dense tensor, got {type(t).__name__}")
            if t.shape != p.shape:
                raise ValueError(f"{where}: {key} has shape {tuple(t.shape)}; it must have the param's shape")
            if t.device != p.device:
                raise ValueError(f"{where}: {key} is on {t.device}; move the state to the param's device "
                                 f"(e.g. create or load the optimizer after moving the model)")
            if t.dtype not in (torch.float32, p.dtype) or t.dtype != m.dtype:
                raise TypeError(f"{where}: {key} has dtype {t.dtype}; exp_avg and exp_avg_sq must both be float32 "
                                f"or the param dtype")
            if not t.is_contiguous():
                raise ValueError(f"{where}: {key} must be contiguous")
        _one_element_fp32(s, f"{where}: step", p.device)

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
        """Raise a clear error naming the first param (index in its group) whose grad or state the op
        cannot take; return quietly when every param looks fine."""
        device = None
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            if device is None:
                device = p.device
            if (g.layout != torch.strided or p.dtype not in _SUPPORTED_DTYPES or g.dtype != p.dtype
                    or p.device != device or g.device != device or g.shape != p.shape or not p.is_contiguous()
                    or not g.is_contiguous()):
                self._raise_bad_param(i, p, g, device)
            state = self.state[p]
            self._check_state(f"param {i} of its group", p, state["exp_avg"], state["exp_avg_sq"], state["step"])

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
