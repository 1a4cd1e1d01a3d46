"""Gradient arithmetic of the engine's step: the global norm, unscaling and clipping.

All functions take plain tensors (a DTensor gradient's local shard). The global 2-norm is computed in
fp32 as the square root of the sum of squares; with ``sharded=True`` the sum is all-reduced over the
default process group first (each rank holds a different shard), so every rank gets the same norm.
Clipping follows ``torch.nn.utils.clip_grad_norm_``: the gradients are multiplied by
``max_norm / (norm + 1e-6)`` when that is below 1.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.distributed as dist


def global_norm(grads: List[torch.Tensor], sharded: bool, reduce_on: Optional[torch.device] = None) -> float:
    """The 2-norm over all ``grads`` (of every rank when ``sharded``); inf or nan when any holds inf/nan.
    A collective when ``sharded``: every rank must call it, and the sum is all-reduced on ``reduce_on``
    (the process group's device: with ZeRO-Offload the gradients are in CPU memory while NCCL needs the
    GPU; None: the gradients' device)."""
    device = grads[0].device if grads else torch.device("cpu")
    nonempty = [g for g in grads if g.numel()]
    if nonempty:
        norms = torch._foreach_norm([g.float() if g.dtype != torch.float32 else g for g in nonempty], 2)
        square_sum = torch.stack(norms).pow(2).sum()
    else:
        square_sum = torch.zeros((), dtype=torch.float32, device=device)
    if sharded and dist.is_initialized() and dist.get_world_size() > 1:
        if reduce_on is not None and square_sum.device != reduce_on:
            square_sum = square_sum.to(reduce_on)
        dist.all_reduce(square_sum, op=dist.ReduceOp.SUM)
    return float(square_sum.sqrt())


def scale_(grads: List[torch.Tensor], factor: float) -> None:
    """Multiply every gradient by ``factor`` in place (nothing when it is 1)."""
    if factor != 1.0 and grads:
        torch._foreach_mul_(grads, factor)


def clip_factor(norm: float, max_norm: float) -> float:
    """The factor ``clip_grad_norm_`` applies: ``max_norm / (norm + 1e-6)`` capped at 1; 1 without clipping
    (``max_norm`` 0) or for a non-finite norm."""
    if max_norm <= 0 or not math.isfinite(norm):
        return 1.0
    return min(1.0, max_norm / (norm + 1e-6))
