"""A parameter partitioned by ``zero.Init``: how it is split, gathered and split again.

DeepSpeed's representation, kept so that scripts that look at it work: the ``Parameter`` object stays the
same (the module, tied weights and any optimizer built on it keep their reference); its data becomes an
empty tensor, and attributes say what it was: ``ds_id`` (the order of partitioning, the same on every rank),
``ds_shape``, ``ds_numel``, ``ds_status`` and ``ds_tensor``, this rank's part.

The part is FSDP2's: the ``torch.chunk`` of the full tensor along dimension 0 into ``world_size`` pieces,
piece ``rank`` (possibly empty), so the engine copies it into the FSDP2 shard unchanged
(:mod:`accelops.runtime.zero.materialize`). DeepSpeed's part is a flat 1/world_size slice with padding
instead; no script should depend on that layout. A 0-dimensional parameter is not split: every rank keeps
it whole.

All collectives run over ``group`` (the default process group). Every rank must partition and gather the
same parameters in the same order.
"""
from __future__ import annotations

import enum
import itertools
from typing import Any, List, Optional

import torch

_NEXT_ID = itertools.count()


class ZeroParamStatus(enum.Enum):
    """DeepSpeed's ``ZeroParamStatus``: AVAILABLE (full data present), NOT_AVAILABLE (only this rank's part),
    INFLIGHT (being gathered; never seen here, gathering is synchronous)."""
    AVAILABLE = 1
    NOT_AVAILABLE = 2
    INFLIGHT = 3


class ZeroParamState:
    """What accelops keeps besides DeepSpeed's attributes: the process group, this rank's place in it, and
    where parts and gathered tensors live."""

    __slots__ = ("group", "rank", "world_size", "compute_device", "part_device", "pin_memory")

    def __init__(self, group: Any, rank: int, world_size: int, compute_device: torch.device,
                 part_device: torch.device, pin_memory: bool) -> None:
        self.group, self.rank, self.world_size = group, rank, world_size
        self.compute_device, self.part_device, self.pin_memory = compute_device, part_device, pin_memory


STATE_ATTRIBUTE = "_accelops_zero"


def is_zero_param(param: Any) -> bool:
    """True for a parameter partitioned by ``zero.Init`` (DeepSpeed's test: it has ``ds_id``)."""
    return hasattr(param, "ds_id") and hasattr(param, STATE_ATTRIBUTE)


def zero_state(param: torch.Tensor) -> ZeroParamState:
    return getattr(param, STATE_ATTRIBUTE)


def _part_of(full: torch.Tensor, state: ZeroParamState) -> torch.Tensor:
    """This rank's part of ``full``: a new tensor on the part device (module docstring)."""
    if full.dim() == 0:
        part = full.detach().clone()
    else:
        pieces = torch.chunk(full.detach(), state.world_size, dim=0)
        if state.rank < len(pieces):
            part = pieces[state.rank].clone()
        else:  # torch.chunk gives fewer pieces than ranks when dim 0 is short: this rank's piece is empty
            part = full.new_empty((0, *full.shape[1:]))
    part = part.to(state.part_device)
    if state.pin_memory and part.device.type == "cpu" and torch.cuda.is_available():
        part = part.pin_memory()
    return part


def _release(param: torch.Tensor) -> None:
    """Drop the full data: the parameter keeps an empty tensor of its dtype on the part device."""
    param.data = torch.empty(0, dtype=param.dtype, device=zero_state(param).part_device)
    param.ds_status = ZeroParamStatus.NOT_AVAILABLE


def broadcast_full(param: torch.Tensor, src: int = 0) -> None:
    """Give every rank ``src``'s full data of ``param`` (available on every rank; a collective)."""
    import torch.distributed as dist

    state = zero_state(param)
    if state.world_size == 1:
        return
    on_device = param.data.to(state.compute_device)
    dist.broadcast(on_device, src=dist.get_global_rank(state.group, src) if state.group is not None else src,
                   group=state.group)
    if on_device is not param.data:
        param.data.copy_(on_device)


def partition(param: torch.nn.Parameter, state: ZeroParamState) -> None:
    """Make ``param`` (full data) a zero parameter: every rank takes rank 0's data (as DeepSpeed, so ranks
    seeded differently still agree), keeps its part and drops the rest (module docstring). A collective.
    Side effects: sets DeepSpeed's ``ds_*`` attributes and the accelops state."""
    setattr(param, STATE_ATTRIBUTE, state)
    param.ds_id = next(_NEXT_ID)
    param.ds_shape = param.shape
    param.ds_numel = param.numel()
    param.ds_persist = False
    broadcast_full(param, 0)
    repartition(param)


def repartition(param: torch.Tensor) -> None:
    """Keep this rank's part of ``param``'s present full data (which every rank must agree on) and drop
    the rest; the part replaces the previous one."""
    param.ds_tensor = _part_of(param.data, zero_state(param))
    _release(param)


def gather(params: List[torch.Tensor]) -> None:
    """Give each zero parameter of ``params`` its full data (a collective over each one's group; every rank
    passes the same parameters in the same order). The data is a new tensor on the compute device, in
    ``ds_shape``; ``ds_status`` becomes AVAILABLE."""
    import torch.distributed as dist

    for param in params:
        state = zero_state(param)
        part = param.ds_tensor.to(state.compute_device)
        if state.world_size == 1 or len(param.ds_shape) == 0:
            full = part.clone()
        else:
            rows = [piece.shape[0] for piece in torch.chunk(torch.empty(param.ds_shape[0], device="meta"),
                                                            state.world_size)]
            rows += [0] * (state.world_size - len(rows))
            padded = max(rows)
            buffer = part.new_zeros((padded, *param.ds_shape[1:]))
            buffer[:part.shape[0]].copy_(part)
            pieces = [torch.empty_like(buffer) for _ in range(state.world_size)]
            dist.all_gather(pieces, buffer, group=state.group)
            full = torch.cat([piece[:n] for piece, n in zip(pieces, rows)], dim=0)
        param.data = full.reshape(param.ds_shape)
        param.ds_status = ZeroParamStatus.AVAILABLE


def release(params: List[torch.Tensor], modifier_rank: Optional[int] = None) -> None:
    """After :func:`gather`: with ``modifier_rank``, that rank's data (changed or not) is broadcast and
    becomes every rank's new part; without it, changes are dropped and the old parts stay. Either way the
    full data is freed."""
    for param in params:
        if modifier_rank is None:
            _release(param)
        else:
            broadcast_full(param, modifier_rank)
            repartition(param)
