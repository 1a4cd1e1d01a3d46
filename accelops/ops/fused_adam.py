"""Multi-tensor fused Adam/AdamW: the ``accelops::fused_adam_step_`` op and the ``FusedAdam`` optimizer.

The op updates every tensor of its lists in one go. On CUDA (and ROCm) it runs the ``fused_adam``
extension (built on first use); on any other device, or when the extension cannot be built, it runs a
pure-torch implementation with ``torch.optim.Adam``/``AdamW`` semantics and warns once. Importing this
module registers the op; it builds and loads nothing until a CUDA step runs.
"""
import warnings
from typing import List, Optional

import torch
from torch import Tensor

__all__ = ["FusedAdam", "fused_adam_step_"]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_warned = set()
_cuda_module = None
_cuda_load_failed = False


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _load_cuda_module():
    """The built ``fused_adam`` extension, or None (with a one-time warning) when it cannot be built."""
    global _cuda_module, _cuda_load_failed
    if _cuda_module is None and not _cuda_load_failed:
        try:
            from accelops.accelerator import get_accelerator

            _cuda_module = get_accelerator().create_op_builder("FusedAdamBuilder").load(verbose=False)
        except Exception as exc:  # build or load failure: the torch fallback still gives correct results
            _cuda_load_failed = True  # tried once per process; no rebuild attempt on every step
            _warn_once("load", f"FusedAdam: the fused_adam CUDA op is unavailable ({exc}); using the torch fallback")
    return _cuda_module


def _adam_torch_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                 adam_w_mode, bias_correction, grad_scale, found_inf) -> None:
    """Pure-torch step with torch.optim.Adam/AdamW semantics; math in fp32 for 16-bit tensors or state."""
    lengths = {len(params), len(grads), len(exp_avgs), len(exp_avg_sqs), len(steps)}
    if len(lengths) != 1:
        raise ValueError("fused_adam: params, grads, exp_avgs, exp_avg_sqs and steps must have the same length, got "
                         f"{len(params)}, {len(grads)}, {len(exp_avgs)}, {len(exp_avg_sqs)}, {len(steps)}")
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
    device = params[0].device.type if params else "cpu"
    _warn_once(f"fallback:{device}", f"FusedAdam: no fused kernel for device '{device}'; using the torch fallback")
    _adam_torch_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, adam_w_mode,
                 bias_correction, grad_scale, found_inf)


@fused_adam_step_.register_kernel("cuda")
def _fused_adam_step_cuda(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                          adam_w_mode, bias_correction, grad_scale=None, found_inf=None) -> None:
    module = _load_cuda_module()
    args = (params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, adam_w_mode,
            bias_correction, grad_scale, found_inf)
    if module is None:
        _adam_torch_(*args)
    else:
        module.fused_adam_step(*args)


@fused_adam_step_.register_fake
def _fused_adam_step_fake(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                          adam_w_mode, bias_correction, grad_scale=None, found_inf=None) -> None:
    return None


class FusedAdam(torch.optim.Optimizer):
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

    def zero_grad(self, set_to_none=None):
        """Clear grads; ``set_to_none`` defaults to the constructor's ``set_grad_none``."""
        super().zero_grad(set_to_none=self.set_grad_none if set_to_none is None else set_to_none)

    def _init_state(self, p, state):
        want = self.state_dtype or p.dtype
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros_like(p, dtype=want, memory_format=torch.contiguous_format)
        state["exp_avg_sq"] = torch.zeros_like(p, dtype=want, memory_format=torch.contiguous_format)

    def load_state_dict(self, state_dict):
        """Load like torch, but keep the saved state's precision: torch casts state to the param dtype,
        which would round fp32 state of 16-bit params; ``step`` goes to the param's device."""
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for pid, p in zip(ids, params):
            if pid not in saved:
                continue
            state, want = self.state[p], self.state_dtype or p.dtype
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = saved[pid][key].to(device=p.device, dtype=want, memory_format=torch.contiguous_format,
                                                copy=True)
            state["step"] = torch.as_tensor(saved[pid]["step"], dtype=torch.float32).to(p.device, copy=True)

    @staticmethod
    def _raise_bad_param(i, p, g, device):
        where = f"FusedAdam: param {i} of its group (shape {tuple(p.shape)})"
        if g.is_sparse:
            raise RuntimeError(f"{where} has a sparse gradient; FusedAdam supports dense gradients only")
        if p.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"{where} has dtype {p.dtype}; supported: float32, float16, bfloat16")
        if g.dtype != p.dtype:
            raise TypeError(f"{where} has dtype {p.dtype} but its gradient has {g.dtype}")
        if p.device != device or g.device != device:
            raise ValueError(f"{where} or its gradient is on {p.device}/{g.device}, but the group's first param "
                             f"is on {device}; put all params of a group on one device")
        raise ValueError(f"{where}: param and gradient must be contiguous (FusedAdam updates in place and never "
                         f"a temporary copy)")

    def _group_tensors(self, group):
        """Checked (params, grads, exp_avgs, exp_avg_sqs, steps) of a group's params that have grads."""
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        device = None
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            if device is None:
                device = p.device
            if (g.is_sparse or p.dtype not in _SUPPORTED_DTYPES or g.dtype != p.dtype or p.device != device
                    or g.device != device or not p.is_contiguous() or not g.is_contiguous()):
                self._raise_bad_param(i, p, g, device)
            state = self.state[p]
            if not state:
                self._init_state(p, state)
            params.append(p)
            grads.append(g)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return params, grads, exp_avgs, exp_avg_sqs, steps

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
            gs = grad_scale.to(device=device, dtype=torch.float32) if grad_scale is not None else None
            fi = found_inf.to(device=device, dtype=torch.float32) if found_inf is not None else None
            torch._foreach_add_(steps, 1)
            fused_adam_step_(params, grads, exp_avgs, exp_avg_sqs, steps, float(group["lr"]), float(beta1),
                             float(beta2), float(group["eps"]), float(group["weight_decay"]),
                             bool(group["decoupled_weight_decay"]),
                             bool(group["bias_correction"]), gs, fi)
            if fi is not None:
                torch._foreach_sub_(steps, [fi] * len(steps))
        return loss
