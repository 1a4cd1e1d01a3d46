"""CUDA (and ROCm) kernels of ``accelops::add_layer_norm_fwd`` / ``accelops::add_layer_norm_bwd``.

The ops, their fake implementations and autograd are defined in ``ops``; ``register()`` (called by the
package when torch has CUDA or ROCm) registers the ``fused_layer_norm`` extension as their "cuda" kernels. The
extension is built on the first CUDA call; when it cannot be built, a pure-torch implementation on the
same device gives the same results (one-time warning).
"""
import torch

from ..loader import kernel_loader
from .build import FusedLayerNormBuilder
from .reference import bwd_torch, fwd_torch
from .validate import check_cuda_bwd, check_cuda_fwd

__all__ = ["CUDA_LOADER", "register"]

_FWD = "accelops::add_layer_norm_fwd"
_BWD = "accelops::add_layer_norm_bwd"
CUDA_LOADER = kernel_loader(FusedLayerNormBuilder, "add_layer_norm: the fused_layer_norm CUDA op is unavailable "
                                                   "({reason}); using a pure-torch implementation")
_registered = False


def _load():
    """The built ``fused_layer_norm`` extension, or None (with a one-time warning) when it cannot be built."""
    return CUDA_LOADER.module()


def _fwd_cuda(x, residual, weight, bias, eps):
    check_cuda_fwd(x, residual, weight, bias)
    # The kernels read contiguous rows; like the CPU kernel, strided inputs go through a copy
    # (no copy when already contiguous, as fused_add_layer_norm passes them).
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    residual = residual.contiguous() if residual is not None else None
    module = _load()
    if module is None:
        return fwd_torch(x, residual, weight, bias, eps)
    return tuple(module.add_layer_norm_fwd(x, residual, weight, bias, eps))


def _bwd_cuda(grad_y, inp, mean, rstd, weight):
    check_cuda_bwd(grad_y, inp, mean, rstd, weight)
    # read-only inputs; autograd may hand a strided gradient
    grad_y, inp, mean, rstd, weight = (t.contiguous() for t in (grad_y, inp, mean, rstd, weight))
    module = _load()
    if module is None:
        return bwd_torch(grad_y, inp, mean, rstd, weight)
    return tuple(module.add_layer_norm_bwd(grad_y, inp, mean, rstd, weight))


def register() -> None:
    """Register the CUDA kernels for the two ops (idempotent; done on import)."""
    global _registered
    if not _registered:
        torch.library.register_kernel(_FWD, "cuda", _fwd_cuda)
        torch.library.register_kernel(_BWD, "cuda", _bwd_cuda)
        _registered = True
