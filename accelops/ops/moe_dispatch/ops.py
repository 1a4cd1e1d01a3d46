"""MoE dispatch and combine from routing indices: the ``accelops::moe_dispatch/moe_combine/moe_combine_bwd``
ops, their autograd and the front ends.

Routes, ``[k, S]`` for k routes per token: ``expert`` (int32, -1 = dropped), ``slot`` (int32, the token's
row in its expert's capacity) and ``gate`` (float32). Schema (shared by every device):

* ``moe_dispatch(tokens [S, M], expert, slot, weight?, num_experts E, capacity C) -> [E, C, M]``: row
  ``(expert, slot)`` of each kept route holds its token (times ``weight``, when given), every other row is 0;
* ``moe_combine(expert_output [E, C, M], expert, slot, weight?) -> [S, M]``: ``out[s] = sum_k weight[k, s] *
  expert_output[expert[k, s], slot[k, s]]`` in float32 (routes added in order k = 0, 1, ...), rounded once
  to the dtype; without weight, 1;
* ``moe_combine_bwd(grad_out, expert_output, expert, slot, gate) -> (grad_expert_output, grad_gate)``.

Gradients: dispatch's backward is a combine of the buffer's gradient with weight 1; combine's backward is
a weighted dispatch of the output's gradient plus one dot product per route for the gate. The CPU kernel is
the ``cpu_moe_dispatch`` extension (built on first use); when it cannot be loaded, or
``ACCELOPS_CPU_OPS_FALLBACK=1`` is set, the torch reference (index ops) gives the same results. CUDA kernels
are registered by ``accelops.ops.moe_dispatch.cuda`` when the package is imported. Importing this module only
defines the ops; it builds nothing.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..loader import CPU_FALLBACK_ENV, kernel_loader
from .build import CPUMoEDispatchBuilder
from .reference import combine_bwd_torch, combine_torch, dispatch_torch
from .validate import check_combine, check_combine_bwd, check_dispatch, check_route_values

__all__ = ["CPU_LOADER", "MoEDispatcher", "moe_combine", "moe_combine_bwd_op", "moe_combine_op", "moe_dispatch",
           "moe_dispatch_op"]

CPU_LOADER = kernel_loader(CPUMoEDispatchBuilder, fallback_env=CPU_FALLBACK_ENV)


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    return t.contiguous() if t is not None else None


@torch.library.custom_op("accelops::moe_dispatch", mutates_args=())
def moe_dispatch_op(tokens: Tensor, expert: Tensor, slot: Tensor, weight: Optional[Tensor], num_experts: int,
                    capacity: int) -> Tensor:
    """Tokens into the expert buffer by route (see the module docstring). Default: torch."""
    check_dispatch(tokens, expert, slot, weight, num_experts, capacity)
    return dispatch_torch(tokens, expert, slot, weight, num_experts, capacity)


@moe_dispatch_op.register_kernel("cpu")
def _dispatch_cpu(tokens, expert, slot, weight, num_experts, capacity):
    check_dispatch(tokens, expert, slot, weight, num_experts, capacity)
    module = CPU_LOADER.module()
    if module is None:
        return dispatch_torch(tokens, expert, slot, weight, num_experts, capacity)
    return module.moe_dispatch(tokens.contiguous(), expert.contiguous(), slot.contiguous(), _contiguous(weight),
                               num_experts, capacity)


@moe_dispatch_op.register_fake
def _dispatch_fake(tokens, expert, slot, weight, num_experts, capacity):
    check_dispatch(tokens, expert, slot, weight, num_experts, capacity)
    return tokens.new_empty((num_experts, capacity, tokens.shape[1]))


@torch.library.custom_op("accelops::moe_combine", mutates_args=())
def moe_combine_op(expert_output: Tensor, expert: Tensor, slot: Tensor, weight: Optional[Tensor]) -> Tensor:
    """Gate-weighted sum of each token's expert rows (see the module docstring). Default: torch."""
    check_combine(expert_output, expert, slot, weight)
    return combine_torch(expert_output, expert, slot, weight)


@moe_combine_op.register_kernel("cpu")
def _combine_cpu(expert_output, expert, slot, weight):
    check_combine(expert_output, expert, slot, weight)
    module = CPU_LOADER.module()
    if module is None:
        return combine_torch(expert_output, expert, slot, weight)
    return module.moe_combine(expert_output.contiguous(), expert.contiguous(), slot.contiguous(), _contiguous(weight))


@moe_combine_op.register_fake
def _combine_fake(expert_output, expert, slot, weight):
    check_combine(expert_output, expert, slot, weight)
    return expert_output.new_empty((expert.shape[1], expert_output.shape[2]))


@torch.library.custom_op("accelops::moe_combine_bwd", mutates_args=())
def moe_combine_bwd_op(grad_out: Tensor, expert_output: Tensor, expert: Tensor, slot: Tensor,
                       gate: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradients of moe_combine with respect to expert_output and the gate. Default: torch."""
    check_combine_bwd(grad_out, expert_output, expert, slot, gate)
    return combine_bwd_torch(grad_out, expert_output, expert, slot, gate)


@moe_combine_bwd_op.register_kernel("cpu")
def _combine_bwd_cpu(grad_out, expert_output, expert, slot, gate):
    check_combine_bwd(grad_out, expert_output, expert, slot, gate)
    module = CPU_LOADER.module()
    if module is None:
        return combine_bwd_torch(grad_out, expert_output, expert, slot, gate)
    return tuple(module.moe_combine_bwd(grad_out.contiguous(), expert_output.contiguous(), expert.contiguous(),
                                        slot.contiguous(), gate.contiguous()))


@moe_combine_bwd_op.register_fake
def _combine_bwd_fake(grad_out, expert_output, expert, slot, gate):
    check_combine_bwd(grad_out, expert_output, expert, slot, gate)
    return torch.empty_like(expert_output, memory_format=torch.contiguous_format), torch.empty_like(gate)


def _dispatch_setup(ctx, inputs, output):
    _tokens, expert, slot, weight, _e, _c = inputs
    ctx.save_for_backward(expert, slot, weight)


def _dispatch_backward(ctx, grad):
    expert, slot, weight = ctx.saved_tensors
    # the weight (used by combine's backward, without grad) is not differentiated
    return moe_combine_op(grad.contiguous(), expert, slot, weight), None, None, None, None, None


def _combine_setup(ctx, inputs, output):
    expert_output, expert, slot, weight = inputs
    ctx.save_for_backward(expert_output, expert, slot, weight)


def _combine_backward(ctx, grad):
    expert_output, expert, slot, weight = ctx.saved_tensors
    grad = grad.contiguous()
    if weight is None:
        num_experts, capacity, _m = expert_output.shape
        return moe_dispatch_op(grad, expert, slot, None, num_experts, capacity), None, None, None
    grad_y, grad_gate = moe_combine_bwd_op(grad, expert_output, expert, slot, weight)
    return grad_y, None, None, grad_gate


moe_dispatch_op.register_autograd(_dispatch_backward, setup_context=_dispatch_setup)
moe_combine_op.register_autograd(_combine_backward, setup_context=_combine_setup)


def moe_dispatch(tokens: Tensor, expert: Tensor, slot: Tensor, num_experts: int, capacity: int,
                 check_routes: bool = True) -> Tensor:
    """The ``[E, C, M]`` expert buffer of ``tokens`` ``[S, M]`` by route: ``buffer[expert[k, s], slot[k, s]] =
    tokens[s]`` for every kept route (``expert >= 0``), zeros elsewhere; differentiable in ``tokens``.

    ``einsum("sec,sm->ecm", dispatch_mask, tokens)`` without the ``[S, E, C]`` mask. ``check_routes`` reads the
    indices first (range, one route per buffer row) for a clear error; turn it off only for routes made by the
    gating functions, to spare the device sync."""
    check_dispatch(tokens, expert, slot, None, num_experts, capacity)
    if check_routes:
        check_route_values(expert, slot, num_experts, capacity, "moe_dispatch")
    return moe_dispatch_op(tokens.contiguous(), expert.contiguous(), slot.contiguous(), None, num_experts, capacity)


def moe_combine(expert_output: Tensor, expert: Tensor, slot: Tensor, gate: Optional[Tensor] = None,
                check_routes: bool = True) -> Tensor:
    """``[S, M]``: ``out[s] = sum_k gate[k, s] * expert_output[expert[k, s], slot[k, s]]`` over kept routes (float32
    sums, output in ``expert_output``'s dtype); differentiable in ``expert_output`` and ``gate``.

    ``einsum("sec,ecm->sm", combine_weights, expert_output)`` without the ``[S, E, C]`` weights. ``gate`` None
    weighs every route 1. ``check_routes`` as for :func:`moe_dispatch`."""
    check_combine(expert_output, expert, slot, gate)
    if check_routes:
        check_route_values(expert, slot, expert_output.shape[0], expert_output.shape[1], "moe_combine")
    return moe_combine_op(expert_output.contiguous(), expert.contiguous(), slot.contiguous(), _contiguous(gate))


class MoEDispatcher:
    """The front end of the op on one device: ``dispatch``/``combine`` (:func:`moe_dispatch`, :func:`moe_combine`)
    and which path runs there (``backend``: ``"kernel"`` or ``"torch"``, ``backend_reason``: why)."""

    def __init__(self, device="cpu") -> None:
        self.device = torch.device(device)

    def _loader(self):
        from .cuda import CUDA_LOADER

        return {"cpu": CPU_LOADER, "cuda": CUDA_LOADER}.get(self.device.type)

    @property
    def backend(self) -> str:
        """``"kernel"`` when the compiled op of the device runs (it loads on first use), else ``"torch"``."""
        loader = self._loader()
        return "kernel" if loader is not None and loader.module() is not None else "torch"

    @property
    def backend_reason(self) -> Optional[str]:
        """Why this path runs: the op, its variant and where it was loaded from, or why torch runs."""
        loader = self._loader()
        if loader is None:
            return f"no MoE dispatch kernel for device {self.device.type}"
        return loader.backend_reason

    dispatch = staticmethod(moe_dispatch)
    combine = staticmethod(moe_combine)
