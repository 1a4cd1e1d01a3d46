"""CUDA (and ROCm) kernels of ``accelops::add_layer_norm_fwd`` / ``accelops::add_layer_norm_bwd``.

The ops, their fake implementations and autograd are defined in ``accelops.ops.layer_norm_ops``;
importing this module registers the ``fused_layer_norm`` extension as their "cuda" kernels. The
extension is built on the first CUDA call; when it cannot be built, a pure-torch implementation on the
same device gives the same results (one-time warning).
"""
import warnings

import torch

from accelops.ops import layer_norm_ops  # noqa: F401  (defines the ops registered below)

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


def _fwd_torch(x, residual, weight, bias, eps):
    s = x + residual if residual is not None else x.new_empty(0)
    src = (s if residual is not None else x).float()
    var, mean = torch.var_mean(src, dim=-1, unbiased=False)
    rstd = torch.rsqrt(var + eps)
    y = ((src - mean.unsqueeze(-1)) * rstd.unsqueeze(-1) * weight.float() + bias.float()).to(x.dtype)
    return y, s, mean.reshape(-1), rstd.reshape(-1)


def _bwd_torch(grad_y, inp, mean, rstd, weight):
    n = inp.shape[-1]
    dy = grad_y.float().reshape(-1, n)
    xhat = (inp.float().reshape(-1, n) - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)
    g = dy * weight.float()
    grad_input = rstd.unsqueeze(-1) * (g - (g.sum(-1, keepdim=True) + xhat * (g * xhat).sum(-1, keepdim=True)) / n)
    return (grad_input.to(inp.dtype).reshape(inp.shape), (dy * xhat).sum(0).to(weight.dtype),
            dy.sum(0).to(weight.dtype))


def _fwd_cuda(x, residual, weight, bias, eps):
    module = _load()
    if module is None:
        return _fwd_torch(x, residual, weight, bias, eps)
    return tuple(module.add_layer_norm_fwd(x, residual, weight, bias, eps))


def _bwd_cuda(grad_y, inp, mean, rstd, weight):
    module = _load()
    grad_y = grad_y.contiguous()  # read-only input; autograd may hand a strided gradient
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
