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
are registered by ``accelops.ops.layer_norm.cuda`` when the package is imported.
Importing this module only defines the ops; it builds nothing.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..loader import CPU_FALLBACK_ENV, kernel_loader
from .build import CPULayerNormBuilder
from .reference import bwd_torch, fwd_torch
from .validate import check_arguments, check_bwd, check_fwd

__all__ = ["CPU_LOADER", "add_layer_norm_fwd", "add_layer_norm_bwd", "fused_add_layer_norm", "layer_norm_path"]

CPU_LOADER = kernel_loader(CPULayerNormBuilder, fallback_env=CPU_FALLBACK_ENV)


def layer_norm_path() -> str:
    """Which CPU implementation runs: ``"kernel"`` (the cpu_layer_norm extension) or ``"torch"``."""
    return CPU_LOADER.backend


@torch.library.custom_op("accelops::add_layer_norm_fwd", mutates_args=())
def add_layer_norm_fwd(x: Tensor, residual: Optional[Tensor], weight: Tensor, bias: Tensor,
                       eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Residual add + layer norm forward (see the module docstring for the schema). Default: torch."""
    check_fwd(x, residual, weight, bias)
    return fwd_torch(x, residual, weight, bias, eps)


@add_layer_norm_fwd.register_kernel("cpu")
def _fwd_cpu(x, residual, weight, bias, eps):
    check_fwd(x, residual, weight, bias)
    module = CPU_LOADER.module()
    if module is None:
        return fwd_torch(x, residual, weight, bias, eps)
    return tuple(module.add_layer_norm_fwd(x.contiguous(), residual.contiguous() if residual is not None else None,
                                           weight.contiguous(), bias.contiguous(), float(eps)))


@add_layer_norm_fwd.register_fake
def _fwd_fake(x, residual, weight, bias, eps):
    check_fwd(x, residual, weight, bias)
    rows = x.numel() // x.shape[-1]
    s = torch.empty_like(x, memory_format=torch.contiguous_format) if residual is not None else x.new_empty(0)
    stat = x.new_empty((rows,), dtype=torch.float32)
    return torch.empty_like(x, memory_format=torch.contiguous_format), s, stat, torch.empty_like(stat)


@torch.library.custom_op("accelops::add_layer_norm_bwd", mutates_args=())
def add_layer_norm_bwd(grad_y: Tensor, input: Tensor, mean: Tensor, rstd: Tensor,
                       weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Layer norm backward w.r.t. ``input`` (= s or x), weight and bias. Default: torch."""
    check_bwd(grad_y, input, mean, rstd, weight)
    return bwd_torch(grad_y, input, mean, rstd, weight)


@add_layer_norm_bwd.register_kernel("cpu")
def _bwd_cpu(grad_y, input, mean, rstd, weight):
    check_bwd(grad_y, input, mean, rstd, weight)
    module = CPU_LOADER.module()
    if module is None:
        return bwd_torch(grad_y, input, mean, rstd, weight)
    return tuple(module.add_layer_norm_bwd(grad_y.contiguous(), input.contiguous(), mean.contiguous(),
                                           rstd.contiguous(), weight.contiguous()))


@add_layer_norm_bwd.register_fake
def _bwd_fake(grad_y, input, mean, rstd, weight):
    check_bwd(grad_y, input, mean, rstd, weight)
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
    check_arguments(x, residual, weight, bias, eps)
    x = x.contiguous()
    residual = residual.contiguous() if residual is not None else None
    y, s, _mean, _rstd = add_layer_norm_fwd(x, residual, weight, bias, float(eps))
    if return_sum:
        return y, (s if residual is not None else x)
    return y

