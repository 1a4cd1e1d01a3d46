"""Fused residual-add + layer norm: the ``accelops::add_layer_norm_fwd/bwd`` ops and their autograd.

Schema (shared by every device):

* ``add_layer_norm_fwd(x, residual?, weight, bias, eps) -> (y, s, mean, rstd)``: ``x`` and ``residual``
  are contiguous ``[..., N]`` of one dtype (float32/bfloat16/float16); ``weight``/``bias`` are ``[N]`` of
  that dtype. ``s = x + residual`` in x's dtype (a 0-element tensor without residual), ``y`` is the layer
  norm of ``s`` (or ``x``), ``mean``/``rstd`` are float32 ``[rows]``.
* ``add_layer_norm_bwd(grad_y, input, mean, rstd, weight) -> (grad_input, grad_weight, grad_bias)``:
  ``input`` is ``s`` (or ``x``); ``grad_input`` is the gradient w.r.t. ``input`` (the same for ``x`` and
  ``residual``); ``grad_weight``/``grad_bias`` have weight's dtype.

The CPU kernel is the ``cpu_layer_norm`` extension (built on first use); when it cannot be loaded, or
``ACCELOPS_CPU_OPS_FALLBACK=1`` is set, a pure-torch implementation gives the same results. CUDA kernels
are registered by ``accelops.ops.layer_norm_cuda``, imported with this module when torch has CUDA or ROCm.
Importing this module only defines the ops; it builds nothing.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._cpu_loader import cpu_op_path, load_cpu_op

__all__ = ["add_layer_norm_fwd", "add_layer_norm_bwd", "fused_add_layer_norm", "layer_norm_path"]

_BUILDER = "CPULayerNormBuilder"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def layer_norm_path() -> str:
    """Which CPU implementation runs: ``"kernel"`` (the cpu_layer_norm extension) or ``"torch"``."""
    return cpu_op_path(_BUILDER)


def _check_fwd(x: Tensor, residual: Optional[Tensor], weight: Tensor, bias: Tensor) -> None:
    """Raise a clear error for inputs outside the schema (any device)."""
    if x.dtype not in _DTYPES:
        raise TypeError(f"add_layer_norm: x must be float32, bfloat16 or float16, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"add_layer_norm: x must have shape [..., N] with N > 0, got {tuple(x.shape)}")
    n = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != (n,):
            raise ValueError(f"add_layer_norm: {name} must have shape [{n}] (x's last dim), got {tuple(t.shape)}")
    tensors = [("x", x), ("weight", weight), ("bias", bias)]
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"add_layer_norm: residual must have x's shape {tuple(x.shape)}, "
                             f"got {tuple(residual.shape)}")
        tensors.append(("residual", residual))
    for name, t in tensors:
        if t.dtype != x.dtype:
            raise TypeError(f"add_layer_norm: {name} has dtype {t.dtype}, expected x's dtype {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"add_layer_norm: {name} is on {t.device}, expected x's device {x.device}")
        if t.layout != torch.strided:
            raise ValueError(f"add_layer_norm: {name} must be a dense (strided) tensor, got {t.layout}")


def _check_arguments(x, residual, weight, bias, eps) -> None:
    """Types and eps of ``fused_add_layer_norm``'s arguments (shapes and dtypes: ``_check_fwd``)."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if not isinstance(t, Tensor):
            raise TypeError(f"fused_add_layer_norm: {name} must be a tensor, got {type(t).__name__} (weight and "
                            f"bias are required; pass ones and zeros for a layer norm without affine parameters)")
    if residual is not None and not isinstance(residual, Tensor):
        raise TypeError(f"fused_add_layer_norm: residual must be a tensor or None, got {type(residual).__name__}")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"fused_add_layer_norm: eps must be a finite number >= 0, got {eps!r}")


def _check_bwd(grad_y: Tensor, inp: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor) -> None:
    n = inp.shape[-1]
    rows = inp.numel() // n if n else 0
    if grad_y.shape != inp.shape or grad_y.dtype != inp.dtype:
        raise ValueError(f"add_layer_norm backward: grad_y must match input ({tuple(inp.shape)}, {inp.dtype}), "
                         f"got ({tuple(grad_y.shape)}, {grad_y.dtype})")
    for name, t in (("mean", mean), ("rstd", rstd)):
        if t.shape != (rows,) or t.dtype != torch.float32:
            raise ValueError(f"add_layer_norm backward: {name} must be float32 of shape [{rows}], "
                             f"got {t.dtype} {tuple(t.shape)}")
    if weight.shape != (n,) or weight.dtype != inp.dtype:
        raise ValueError(f"add_layer_norm backward: weight must be {inp.dtype} of shape [{n}], "
                         f"got {weight.dtype} {tuple(weight.shape)}")


def _fwd_torch(x, residual, weight, bias, eps):
    """Reference forward in torch: statistics in float32, s rounded to x's dtype first (as x + r is)."""
    s = x + residual if residual is not None else x.new_empty(0)
    src = (s if residual is not None else x).float()
    var, mean = torch.var_mean(src, dim=-1, unbiased=False)
    rstd = torch.rsqrt(var + eps)
    y = ((src - mean.unsqueeze(-1)) * rstd.unsqueeze(-1) * weight.float() + bias.float()).to(x.dtype)
    return y, s, mean.reshape(-1), rstd.reshape(-1)


def _bwd_torch(grad_y, inp, mean, rstd, weight):
    """Reference backward in torch (float32 math)."""
    n = inp.shape[-1]
    dy = grad_y.float().reshape(-1, n)
    xhat = (inp.float().reshape(-1, n) - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)
    g = dy * weight.float()
    grad_in = rstd.unsqueeze(-1) * (g - (g.sum(-1, keepdim=True) + xhat * (g * xhat).sum(-1, keepdim=True)) / n)
    return (grad_in.to(inp.dtype).reshape(inp.shape), (dy * xhat).sum(0).to(weight.dtype),
            dy.sum(0).to(weight.dtype))


@torch.library.custom_op("accelops::add_layer_norm_fwd", mutates_args=())
def add_layer_norm_fwd(x: Tensor, residual: Optional[Tensor], weight: Tensor, bias: Tensor,
                       eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Residual add + layer norm forward (see the module docstring for the schema). Default: torch."""
    _check_fwd(x, residual, weight, bias)
    return _fwd_torch(x, residual, weight, bias, eps)


@add_layer_norm_fwd.register_kernel("cpu")
def _fwd_cpu(x, residual, weight, bias, eps):
    _check_fwd(x, residual, weight, bias)
    module = load_cpu_op(_BUILDER)
    if module is None:
        return _fwd_torch(x, residual, weight, bias, eps)
    return tuple(module.add_layer_norm_fwd(x.contiguous(), residual.contiguous() if residual is not None else None,
                                           weight.contiguous(), bias.contiguous(), float(eps)))


@add_layer_norm_fwd.register_fake
def _fwd_fake(x, residual, weight, bias, eps):
    _check_fwd(x, residual, weight, bias)
    rows = x.numel() // x.shape[-1]
    s = torch.empty_like(x, memory_format=torch.contiguous_format) if residual is not None else x.new_empty(0)
    stat = x.new_empty((rows,), dtype=torch.float32)
    return torch.empty_like(x, memory_format=torch.contiguous_format), s, stat, torch.empty_like(stat)


@torch.library.custom_op("accelops::add_layer_norm_bwd", mutates_args=())
def add_layer_norm_bwd(grad_y: Tensor, input: Tensor, mean: Tensor, rstd: Tensor,
                       weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Layer norm backward w.r.t. ``input`` (= s or x), weight and bias. Default: torch."""
    _check_bwd(grad_y, input, mean, rstd, weight)
    return _bwd_torch(grad_y, input, mean, rstd, weight)


@add_layer_norm_bwd.register_kernel("cpu")
def _bwd_cpu(grad_y, input, mean, rstd, weight):
    _check_bwd(grad_y, input, mean, rstd, weight)
    module = load_cpu_op(_BUILDER)
    if module is None:
        return _bwd_torch(grad_y, input, mean, rstd, weight)
    return tuple(module.add_layer_norm_bwd(grad_y.contiguous(), input.contiguous(), mean.contiguous(),
                                           rstd.contiguous(), weight.contiguous()))


@add_layer_norm_bwd.register_fake
def _bwd_fake(grad_y, input, mean, rstd, weight):
    _check_bwd(grad_y, input, mean, rstd, weight)
    return (torch.empty_like(input, memory_format=torch.contiguous_format), torch.empty_like(weight),
            torch.empty_like(weight))


def _setup_context(ctx, inputs, output):
    x, residual, weight, _bias, _eps = inputs
    _y, s, mean, rstd = output
    ctx.has_residual = residual is not None
    ctx.save_for_backward(s if residual is not None else x, mean, rstd, weight)


def _backward(ctx, grad_y, grad_s, _grad_mean, _grad_rstd):
    inp, mean, rstd, weight = ctx.saved_tensors
    if grad_y is None:
        grad_y = torch.zeros_like(inp)
    grad_in, grad_w, grad_b = add_layer_norm_bwd(grad_y.contiguous(), inp, mean, rstd, weight)
    if ctx.has_residual and grad_s is not None:
        grad_in = grad_in + grad_s  # s is also an output (the next residual)
    return grad_in, (grad_in if ctx.has_residual else None), grad_w, grad_b, None


add_layer_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


def fused_add_layer_norm(x: Tensor, residual: Optional[Tensor], weight: Tensor, bias: Tensor,
                         eps: float = 1e-5, return_sum: bool = False):
    """``F.layer_norm(x + residual, (N,), weight, bias, eps)`` in one pass, differentiable.

    ``residual`` may be None (plain layer norm). With ``return_sum=True`` returns ``(y, s)`` where
    ``s = x + residual`` (the next block's residual; ``x`` itself without residual). Non-contiguous
    inputs are read through a contiguous copy (inputs are never written).
    """
    _check_arguments(x, residual, weight, bias, eps)
    x = x.contiguous()
    residual = residual.contiguous() if residual is not None else None
    y, s, _mean, _rstd = add_layer_norm_fwd(x, residual, weight, bias, float(eps))
    if return_sum:
        return y, (s if residual is not None else x)
    return y


if torch.version.cuda or torch.version.hip:  # register the CUDA kernels too, so direct torch.ops calls use them
    from . import layer_norm_cuda  # noqa: E402,F401  (builds nothing until a CUDA call)
