"""CUDA (and ROCm) kernels of ``accelops::moe_dispatch/moe_combine/moe_combine_bwd``.

The ops, their fakes and autograd are defined in ``ops``; ``register()`` (called by the package) registers the
``fused_moe_dispatch`` extension as their "cuda" kernels. The extension is built on the first CUDA call; when it
cannot be built, the torch reference on the same device gives the same results (one-time warning). Route values
are checked here (a device sync) before a kernel reads them.
"""
import torch

from ..loader import kernel_loader
from .build import FusedMoEDispatchBuilder
from .reference import combine_bwd_torch, combine_torch, dispatch_torch
from .validate import check_combine, check_combine_bwd, check_dispatch, check_route_values

__all__ = ["CUDA_LOADER", "register"]

CUDA_LOADER = kernel_loader(FusedMoEDispatchBuilder, "moe_dispatch: the fused_moe_dispatch CUDA op is unavailable "
                                                     "({reason}); using the torch reference")
_registered = False


def _require_cuda(t, where: str) -> None:
    if t.device.type != "cuda":
        raise ValueError(f"{where} (cuda): tensors must be on a CUDA device, got {t.device}")


def _dispatch_cuda(tokens, expert, slot, weight, num_experts, capacity):
    check_dispatch(tokens, expert, slot, weight, num_experts, capacity)
    _require_cuda(tokens, "moe_dispatch")
    check_route_values(expert, slot, num_experts, capacity, "moe_dispatch (cuda)")
    module = CUDA_LOADER.module()
    if module is None:
        return dispatch_torch(tokens, expert, slot, weight, num_experts, capacity)
    weight = weight.contiguous() if weight is not None else None
    return module.moe_dispatch(tokens.contiguous(), expert.contiguous(), slot.contiguous(), weight, num_experts,
                               capacity)


def _combine_cuda(expert_output, expert, slot, weight):
    check_combine(expert_output, expert, slot, weight)
    _require_cuda(expert_output, "moe_combine")
    check_route_values(expert, slot, expert_output.shape[0], expert_output.shape[1], "moe_combine (cuda)")
    module = CUDA_LOADER.module()
    if module is None:
        return combine_torch(expert_output, expert, slot, weight)
    weight = weight.contiguous() if weight is not None else None
    return module.moe_combine(expert_output.contiguous(), expert.contiguous(), slot.contiguous(), weight)


def _combine_bwd_cuda(grad_out, expert_output, expert, slot, gate):
    check_combine_bwd(grad_out, expert_output, expert, slot, gate)
    _require_cuda(expert_output, "moe_combine backward")
    check_route_values(expert, slot, expert_output.shape[0], expert_output.shape[1], "moe_combine backward (cuda)")
    module = CUDA_LOADER.module()
    if module is None:
        return combine_bwd_torch(grad_out, expert_output, expert, slot, gate)
    return tuple(module.moe_combine_bwd(grad_out.contiguous(), expert_output.contiguous(), expert.contiguous(),
                                        slot.contiguous(), gate.contiguous()))


def register() -> None:
    """Register the CUDA kernels of the three ops (idempotent; done on import)."""
    global _registered
    if not _registered:
        torch.library.register_kernel("accelops::moe_dispatch", "cuda", _dispatch_cuda)
        torch.library.register_kernel("accelops::moe_combine", "cuda", _combine_cuda)
        torch.library.register_kernel("accelops::moe_combine_bwd", "cuda", _combine_bwd_cuda)
        _registered = True
