"""The one validator of the MoE dispatch/combine op: its fake implementations, its kernels on every device and
the front ends (``moe_dispatch``, ``moe_combine``) raise the same clear errors for inputs outside the schema.

``check_*`` look at shapes, dtypes and devices only (they run on fake tensors too); ``check_route_values``
reads the indices (range, one route per buffer row) and is run by the front ends and the CUDA glue.
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = ["DTYPES", "check_combine", "check_combine_bwd", "check_dispatch", "check_route_values"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# The kernels index rows and routes with int32: E * C and k * S stay below this.
MAX_INDEX = 2**31


def _tensor(name: str, t, where: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: {name} must be a tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise ValueError(f"{where}: {name} must be a dense (strided) tensor, got {t.layout}")


def _check_routes(expert: Tensor, slot: Tensor, weight: Optional[Tensor], tokens: int, device: torch.device,
                  where: str) -> None:
    for name, t in (("expert", expert), ("slot", slot)):
        _tensor(name, t, where)
        if t.dtype != torch.int32:
            raise TypeError(f"{where}: {name} must be int32, got {t.dtype}")
        if t.dim() != 2 or t.shape[0] < 1:
            raise ValueError(f"{where}: {name} must have shape [k, S] with k >= 1 routes per token, "
                             f"got {tuple(t.shape)}")
    if expert.shape[1] != tokens:
        raise ValueError(f"{where}: expert has shape {tuple(expert.shape)}, expected [k, {tokens}] (one column per token)")
    if slot.shape != expert.shape:
        raise ValueError(f"{where}: slot must have expert's shape {tuple(expert.shape)}, got {tuple(slot.shape)}")
    if expert.numel() >= MAX_INDEX:
        raise ValueError(f"{where}: k * S must be below 2**31, got {expert.numel()}")
    named = [("expert", expert), ("slot", slot)]
    if weight is not None:
        _tensor("gate", weight, where)
        if weight.dtype != torch.float32:
            raise TypeError(f"{where}: gate must be float32, got {weight.dtype}")
        if weight.shape != expert.shape:
            raise ValueError(f"{where}: gate must have expert's shape {tuple(expert.shape)}, got {tuple(weight.shape)}")
        named.append(("gate", weight))
    for name, t in named:
        if t.device != device:
            raise ValueError(f"{where}: {name} is on {t.device}, expected {device} (the data's device)")


def _check_data(name: str, t: Tensor, dim: int, where: str) -> None:
    _tensor(name, t, where)
    if t.dtype not in DTYPES:
        raise TypeError(f"{where}: {name} must be float32, bfloat16 or float16, got {t.dtype}")
    if t.dim() != dim:
        shape = "[S, M]" if dim == 2 else "[E, C, M]"
        raise ValueError(f"{where}: {name} must have shape {shape}, got {tuple(t.shape)}")


def _check_sizes(num_experts, capacity, where: str) -> None:
    for name, v in (("num_experts", num_experts), ("capacity", capacity)):
        if isinstance(v, bool) or not isinstance(v, (int, torch.SymInt)) or v < 0:  # SymInt: traced shapes
            raise ValueError(f"{where}: {name} must be an int >= 0, got {v!r}")
    if num_experts * capacity >= MAX_INDEX:
        raise ValueError(f"{where}: num_experts * capacity must be below 2**31, got {num_experts} * {capacity}")


def check_dispatch(tokens: Tensor, expert: Tensor, slot: Tensor, weight: Optional[Tensor], num_experts: int,
                   capacity: int) -> None:
    """Shapes, dtypes and devices of ``moe_dispatch``'s arguments."""
    where = "moe_dispatch"
    _check_data("tokens", tokens, 2, where)
    _check_routes(expert, slot, weight, tokens.shape[0], tokens.device, where)
    _check_sizes(num_experts, capacity, where)


def check_combine(expert_output: Tensor, expert: Tensor, slot: Tensor, weight: Optional[Tensor]) -> None:
    """Shapes, dtypes and devices of ``moe_combine``'s arguments."""
    where = "moe_combine"
    _check_data("expert_output", expert_output, 3, where)
    _tensor("expert", expert, where)
    tokens = expert.shape[1] if expert.dim() == 2 else -1
    _check_routes(expert, slot, weight, tokens, expert_output.device, where)
    _check_sizes(expert_output.shape[0], expert_output.shape[1], where)


def check_combine_bwd(grad_out: Tensor, expert_output: Tensor, expert: Tensor, slot: Tensor, gate: Tensor) -> None:
    """``moe_combine``'s backward: its arguments and a gradient of the output's shape and dtype."""
    check_combine(expert_output, expert, slot, gate)
    _check_data("grad_out", grad_out, 2, "moe_combine backward")
    expected = (expert.shape[1], expert_output.shape[2])
    if tuple(grad_out.shape) != expected or grad_out.dtype != expert_output.dtype:
        raise ValueError(f"moe_combine backward: grad_out must be {expert_output.dtype} of shape {list(expected)}, "
                         f"got {grad_out.dtype} {tuple(grad_out.shape)}")
    if grad_out.device != expert_output.device:
        raise ValueError(f"moe_combine backward: grad_out is on {grad_out.device}, expected {expert_output.device}")


def check_route_values(expert: Tensor, slot: Tensor, num_experts: int, capacity: int, where: str) -> None:
    """The routes' values: expert in [-1, num_experts), a kept route's slot in [0, capacity), and no buffer row
    owned by two routes. Reads the indices (a device sync on accelerators)."""
    if expert.numel() == 0:
        return
    bad_expert = (expert < -1) | (expert >= num_experts)
    kept = expert >= 0
    bad_slot = kept & ((slot < 0) | (slot >= capacity))
    bad = torch.nonzero((bad_expert | bad_slot).reshape(-1))
    if bad.numel():
        r = int(bad[0])
        j, s = divmod(r, expert.shape[1])
        raise ValueError(f"{where}: route [{j}, {s}] has expert {int(expert[j, s])} and slot {int(slot[j, s])}; "
                         f"expected expert in [-1, {num_experts}) (-1 = dropped) and slot in [0, {capacity})")
    rows = (expert.long() * capacity + slot.long())[kept]
    if rows.numel() > 1:
        counts = torch.bincount(rows, minlength=1)
        taken = torch.nonzero(counts > 1)
        if taken.numel():
            row = int(taken[0])
            raise ValueError(f"{where}: {int(counts[row])} routes target expert {row // capacity}, slot "
                             f"{row % capacity}; each (expert, slot) buffer row takes one token")
