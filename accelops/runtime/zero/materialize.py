"""The engine's side of ``zero.Init``: a model whose parameters are zero parameters becomes an FSDP2 model
without ever holding its full weights on a rank.

Before wrapping (:func:`prepare`), each zero parameter is replaced, in every module slot that holds it,
by a parameter on the meta device with its full shape (tied weights stay tied: one meta parameter per zero
parameter). FSDP2's ``fully_shard`` accepts meta parameters and shards them on the meta device; then
(:func:`fill`) the meta shards are allocated on the device and each receives its zero parameter's part,
which is FSDP2's own shard of the same tensor (the ``torch.chunk`` piece of dimension 0), copied unchanged.

At ZeRO stage 0 (DDP, or a world of one) there is no sharding to fill: the zero parameters are gathered
whole (:func:`gather_whole`), as DDP needs every rank to hold the model.
"""
from __future__ import annotations

from typing import Dict, List

import torch

from .zero_param import gather, is_zero_param, zero_state


def zero_params(model: torch.nn.Module) -> List[torch.Tensor]:
    """The zero parameters of ``model`` (each once, in ``ds_id`` order)."""
    return sorted((p for p in model.parameters() if is_zero_param(p)), key=lambda p: p.ds_id)


def check_world(params: List[torch.Tensor], rank: int, world_size: int) -> None:
    """ValueError when the parameters were partitioned for another world than the engine's."""
    for param in params:
        state = zero_state(param)
        if (state.rank, state.world_size) != (rank, world_size):
            raise ValueError(f"a parameter was partitioned by zero.Init as rank {state.rank} of {state.world_size}, "
                             f"but the engine runs as rank {rank} of {world_size}; build the model inside zero.Init "
                             f"in the same process group as initialize()")


def gather_whole(params: List[torch.Tensor]) -> None:
    """Make every zero parameter whole again (a collective): the parameter keeps its full data and loses its
    partition record."""
    gather(params)
    for param in params:
        for name in ("ds_tensor", "_accelops_zero", "ds_id", "ds_status"):
            if hasattr(param, name):
                delattr(param, name)


def prepare(model: torch.nn.Module) -> Dict[str, torch.nn.Parameter]:
    """Swap each zero parameter of ``model`` for a meta parameter of its full shape (module docstring).
    Returns name -> the zero parameter, under every name that reaches it."""
    meta_of: Dict[int, torch.nn.Parameter] = {}
    zero_of: Dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None or not is_zero_param(param):
                continue
            if id(param) not in meta_of:
                meta = torch.nn.Parameter(torch.empty(param.ds_shape, dtype=param.dtype, device="meta"),
                                          requires_grad=param.requires_grad)
                meta_of[id(param)], zero_of[id(meta)] = meta, param
            module._parameters[name] = meta_of[id(param)]
    return {name: zero_of[id(param)] for name, param in model.named_parameters(remove_duplicate=False)
            if id(param) in zero_of}


def fill(model: torch.nn.Module, zero: Dict[str, torch.nn.Parameter], device: torch.device) -> None:
    """After ``fully_shard``: allocate the meta shards on ``device`` one FSDP unit at a time (inner units
    first) and copy each zero parameter's part into its shard, dropping the part as soon as it is copied
    (peak: the shards plus the parts not yet copied). RuntimeError when a shard's shape is not the part's
    (FSDP2 sharded differently than expected)."""
    from torch.distributed.fsdp import FSDPModule

    def allocate(tensor: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(tensor, device=device) if tensor.is_meta else tensor

    pending = dict(zero)
    units = [(name, module) for name, module in model.named_modules() if isinstance(module, FSDPModule)]
    for unit_name, unit in reversed(units):  # named_modules is pre-order: reversed, inner units come first
        unit._apply(allocate)  # FSDP2's _apply re-registers each shard (padded) after allocating it
        for name, param in unit.named_parameters(prefix=unit_name, remove_duplicate=False):
            if name in pending:
                _copy_part(name, param, pending.pop(name))


def _copy_part(name: str, param: torch.Tensor, zero: torch.nn.Parameter) -> None:
    local = param.to_local() if hasattr(param, "to_local") else param
    part = zero.ds_tensor
    if part is None:  # a tied parameter reached under an earlier name: already copied
        return
    if local.shape != part.shape:
        raise RuntimeError(f"zero.Init: the shard of {name!r} has shape {tuple(local.shape)}, its part "
                           f"{tuple(part.shape)}; FSDP2 sharded it differently than zero.Init did")
    with torch.no_grad():
        local.copy_(part)
    zero.ds_tensor = None
