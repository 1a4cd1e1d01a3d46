"""CUDA (and ROCm) kernels of ``accelops::add_layer_norm_fwd`` / ``accelops::add_layer_norm_bwd``.

The ops, their fake implementations and autograd are defined in ``accelops.ops.layer_norm_ops``;
importing this module registers the ``fused_layer_norm`` extension as their "cuda" kernels. The
extension is built on the first CUDA call; when it cannot be built, a pure-torch implementation on the
same device gives the same results (one-time warning).
"""
import warnings

import torch

from accelops.ops import layer_norm_ops  # defines the ops registered below
from accelops.ops.layer_norm_ops import _bwd_torch, _fwd_torch

__all__ = ["register"]

_FWD = "accelops::add_layer_norm_fwd"
_BWD = "accelops::add_layer_norm_bwd"
_module = None
_load_failed = False
_registered = False


def _load():
    """The built ``fused_layer_norm`` extension, or None (with a one-time warning) when it cannot be built."""
    global _module, _load_failed
    if _module is None and not _load_failed:
        try:
            from accelops.accelerator import get_accelerator

            _module = get_accelerator().create_op_builder("FusedLayerNormBuilder").load(verbose=False)
        except Exception as exc:  # build or load failure: the torch path still gives correct results
            _load_failed = True
            warnings.warn(f"add_layer_norm: the fused_layer_norm CUDA op is unavailable ({exc}); "
                          f"using a pure-torch implementation", RuntimeWarning, stacklevel=3)
    return _module


# Longest row the CUDA kernels take: their launch planning and loops use 32-bit indices with headroom.
_MAX_ROW = 2**30


def _check_cuda_fwd(x, residual, weight, bias) -> None:
    """Every input the CUDA forward does not take raises a clear Python error here, so that bad input
    never reaches the extension (its own checks are a constant-message last line)."""
    layer_norm_ops._check_fwd(x, residual, weight, bias)  # dtypes, shapes, devices, layouts (any device)
    if x.shape[-1] > _MAX_ROW:
        raise ValueError(f"add_layer_norm (cuda): the row size (x's last dim) must be at most 2**30, "
                         f"got {x.shape[-1]}")
    if x.device.type != "cuda":
        raise ValueError(f"add_layer_norm (cuda): x must be a CUDA tensor, got one on {x.device}")


def _check_cuda_bwd(grad_y, inp, mean, rstd, weight) -> None:
    """The backward's counterpart of _check_cuda_fwd (the op's own check does not cover devices)."""
    if inp.dtype not in layer_norm_ops._DTYPES:
        raise TypeError(f"add_layer_norm backward (cuda): input must be float32, bfloat16 or float16, got {inp.dtype}")
    if inp.dim() < 1 or inp.shape[-1] == 0 or inp.shape[-1] > _MAX_ROW:
        raise ValueError(f"add_layer_norm backward (cuda): input must have shape [..., N] with 0 < N <= 2**30, "
                         f"got {tuple(inp.shape)}")
    layer_norm_ops._check_bwd(grad_y, inp, mean, rstd, weight)
    for name, t in (("grad_y", grad_y), ("input", inp), ("mean", mean), ("rstd", rstd), ("weight", weight)):
        if t.device != inp.device or t.device.type != "cuda":
            raise ValueError(f"add_layer_norm backward (cuda): {name} is on {t.device}; all tensors must be on one "
                             f"CUDA device (input is on {inp.device})")
        if t.layout != torch.strided:
            raise ValueError(f"add_layer_norm backward (cuda): {name} must be a dense (strided) tensor, got {t.layout}")


def _fwd_cuda(x, residual, weight, bias, eps):
    _check_cuda_fwd(x, residual, weight, bias)
    # The kernels read contiguous rows; like the CPU kernel, strided inputs go through a copy
    # (no copy when already contiguous, as fused_add_layer_norm passes them).
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    residual = residual.contiguous() if residual is not None else None
    module = _load()
    if module is None:
        return _fwd_torch(x, residual, weight, bias, eps)
    return tuple(module.add_layer_norm_fwd(x, residual, weight, bias, eps))


def _bwd_cuda(grad_y, inp, mean, rstd, weight):
    _check_cuda_bwd(grad_y, inp, mean, rstd, weight)
    # read-only inputs; autograd may hand a strided gradient
    grad_y, inp, mean, rstd, weight = (t.contiguous() for t in (grad_y, inp, mean, rstd, weight))
    module = _load()
    if module is None:
        return _bwd_torch(grad_y, inp, mean, rstd, weight)
    return tuple(module.add_layer_norm_bwd(grad_y, inp, mean, rstd, weight))


def register() -> None:
    """Register the CUDA kernels for the two ops (idempotent; done on import)."""
    global _registered
    if not _registered:
        torch.library.register_kernel(_FWD, "cuda", _fwd_cuda)
        torch.library.register_kernel(_BWD, "cuda", _bwd_cuda)
        _registered = True


register()
