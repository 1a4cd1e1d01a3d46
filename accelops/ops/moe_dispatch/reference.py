"""The torch reference of the MoE dispatch/combine op (index ops, no dense masks): the tests' and
``ds_report --verify``'s comparison and the path of every device without a loaded kernel.

Routes are ``[k, S]``: ``expert`` (int32, -1 = dropped), ``slot`` (int32) and an optional float32 ``weight``.
The arithmetic is the kernels': float32 products rounded once to the output dtype, and the combine adds
the routes of a token in order k = 0, 1, ... to a float32 zero, so fp32 results equal the CPU kernel's.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["combine_bwd_torch", "combine_torch", "dispatch_torch"]


def _kept(expert: Tensor, slot: Tensor, capacity: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(kept routes' flat indices r = k * S + s, their tokens, their buffer rows)."""
    tokens = expert.shape[1]
    flat_expert, flat_slot = expert.reshape(-1).long(), slot.reshape(-1).long()
    routes = torch.nonzero(flat_expert >= 0).reshape(-1)
    return routes, routes % max(tokens, 1), flat_expert[routes] * capacity + flat_slot[routes]


def dispatch_torch(tokens: Tensor, expert: Tensor, slot: Tensor, weight: Optional[Tensor], num_experts: int,
                   capacity: int) -> Tensor:
    """``[E, C, M]`` buffer: each kept route's token row (times its weight) at ``(expert, slot)``, zeros elsewhere."""
    m = tokens.shape[1]
    routes, src, rows = _kept(expert, slot, capacity)
    values = tokens[src]
    if weight is not None:
        values = (values.float() * weight.reshape(-1)[routes].unsqueeze(1)).to(tokens.dtype)
    buffer = tokens.new_zeros((num_experts * capacity, m))
    buffer.index_copy_(0, rows, values)
    return buffer.reshape(num_experts, capacity, m)


def combine_torch(expert_output: Tensor, expert: Tensor, slot: Tensor, weight: Optional[Tensor]) -> Tensor:
    """``[S, M]``: the sum over k (in order, float32) of ``weight[k, s] * expert_output[expert, slot]``."""
    num_experts, capacity, m = expert_output.shape
    rows = expert_output.reshape(num_experts * capacity, m)
    out = expert_output.new_zeros((expert.shape[1], m), dtype=torch.float32)
    for j in range(expert.shape[0]):
        kept = expert[j] >= 0
        index = torch.where(kept, expert[j].long() * capacity + slot[j].long(), 0)
        value = rows[index].float() if rows.shape[0] else out.clone()
        if weight is not None:
            value = value * weight[j].unsqueeze(1)
        out = out + torch.where(kept.unsqueeze(1), value, 0.0)
    return out.to(expert_output.dtype)


def combine_bwd_torch(grad_out: Tensor, expert_output: Tensor, expert: Tensor, slot: Tensor,
                      gate: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradients of ``combine_torch`` with a gate: ``(grad_expert_output [E, C, M], grad_gate [k, S] float32)``;
    dropped routes get a zero gate gradient."""
    num_experts, capacity, m = expert_output.shape
    grad_y = dispatch_torch(grad_out, expert, slot, gate, num_experts, capacity)
    routes, src, rows = _kept(expert, slot, capacity)
    dots = (grad_out[src].float() * expert_output.reshape(-1, m)[rows].float()).sum(dim=1)
    grad_gate = torch.zeros(expert.numel(), dtype=torch.float32, device=expert.device)
    grad_gate.index_copy_(0, routes, dots)
    return grad_y, grad_gate.reshape(expert.shape)
