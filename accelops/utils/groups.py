"""DeepSpeed's process-group helpers (``deepspeed.utils.groups``) for accelops' one kind of parallelism: data
parallelism over every rank, so the model-, tensor- and sequence-parallel sizes are 1.

DeepSpeed facts (deepspeed/utils/groups.py), without an ``mpu`` or a device mesh: the data-parallel group
spans the world (``_get_data_parallel_group``, its size and this rank's rank in it, its ranks
``range(world_size)``, ``_get_broadcast_src_rank`` its first global rank); ``_get_model_parallel_world_size``
is 1; the sequence-parallel size is 1 and its rank 0, there is no sequence-parallel group (KeyError), and
the sequence-data-parallel group is the data-parallel one; ``_get_expert_model_parallel_world_size`` is 1.

Differences, on purpose:

* The data-parallel group is the default group itself. DeepSpeed makes a copy with ``new_group`` on first
  use (old torch could not translate ranks on the default group), a collective that hangs when only some
  ranks reach it; here no function of this module is a collective.
* The tensor-parallel functions (``get_data_parallel_group``, ``get_model_parallel_world_size``, ...) answer
  for a world without tensor parallelism (data parallel over every rank; model-parallel size 1, rank 0; a
  model-parallel group holding this rank alone) where DeepSpeed asserts that its tensor-parallel groups were
  set up.
* Before ``torch.distributed`` is initialised, sizes are 1 and ranks 0 (as ``accelops.comm.get_rank``);
  asking for a group then is a RuntimeError (DeepSpeed asserts for every function).
* ``initialize(ep_size=1, mpu=None)``: ``mpu`` must be None (as in ``accelops.initialize``); with
  ``ep_size`` > 1 it makes the expert groups below.

Expert groups (mixture of experts, :mod:`accelops.moe`), DeepSpeed's layout without model or pipeline
parallelism, named ``ep_size_<n>``: the expert-parallel groups are runs of ``n`` consecutive ranks (they
exchange tokens), the expert-data-parallel groups the ranks ``n`` apart (they hold copies of the same experts
and reduce their gradients); ``use_data_before_expert_parallel_`` swaps the two. Making them
(``_create_expert_and_data_parallel``) is a collective: every rank makes the same ones in the same order.
"""
from __future__ import annotations

from typing import Any, Optional

#: DeepSpeed's module-level model-parallel unit; always None here (``initialize`` refuses another).
mpu = None
_model_parallel: Optional[tuple] = None  # (default group, the group of this rank alone)

__all__ = ["get_data_parallel_group", "get_data_parallel_rank", "get_data_parallel_world_size",
           "get_model_parallel_group", "get_model_parallel_rank", "get_model_parallel_world_size",
           "get_tensor_model_parallel_group", "get_tensor_model_parallel_rank",
           "get_tensor_model_parallel_src_rank", "get_tensor_model_parallel_world_size", "initialize", "mpu"]


def initialize(ep_size: int = 1, mpu: Any = None) -> None:
    """DeepSpeed's ``groups.initialize``: the expert groups of ``ep_size`` when it is above 1 (nothing to set
    up for data parallelism). ValueError for an ``mpu`` (accelops has no model parallelism)."""
    if mpu is not None:
        raise ValueError("groups.initialize(mpu=...): accelops has no model parallelism; pass mpu=None")
    if ep_size > 1:
        _create_expert_and_data_parallel(ep_size)


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _default_group(caller: str) -> Any:
    if not _initialized():
        raise RuntimeError(f"{caller}() needs an initialised process group: call accelops.init_distributed() or "
                           f"accelops.initialize() first")
    import torch.distributed as dist

    return dist.group.WORLD


# ---------------------------------------------------------------------------------------------- data parallel
def _get_data_parallel_group() -> Any:
    """The data-parallel group: the default process group (every rank). RuntimeError before initialisation."""
    return _default_group("_get_data_parallel_group")


def _get_data_parallel_world_size() -> int:
    """The number of data-parallel ranks: the world size (1 before initialisation)."""
    from accelops.comm import get_world_size

    return get_world_size()


def _get_data_parallel_rank() -> int:
    """This process's data-parallel rank: its global rank (0 before initialisation)."""
    from accelops.comm import get_rank

    return get_rank()


def _get_data_parallel_group_ranks() -> range:
    """The global ranks of the data-parallel group: ``range(world_size)``."""
    return range(_get_data_parallel_world_size())


def _get_broadcast_src_rank() -> int:
    """The global rank that data-parallel broadcasts start from: 0."""
    return 0


# ---------------------------------------------------------------------------------------------- model parallel (size 1)
def _get_model_parallel_world_size() -> int:
    """1: accelops has no model parallelism."""
    return 1


def _get_expert_model_parallel_world_size() -> int:
    """1: accelops has no expert tensor parallelism."""
    return 1


def _get_sequence_parallel_world_size() -> int:
    """1: accelops has no sequence parallelism."""
    return 1


def _get_sequence_parallel_rank() -> int:
    """0: accelops has no sequence parallelism."""
    return 0


def _get_sequence_parallel_group() -> Any:
    """KeyError, as DeepSpeed without sequence parallelism: there is no sequence-parallel group."""
    raise KeyError("No sequence parallel group found (accelops has no sequence parallelism)")


# without sequence parallelism the sequence-data-parallel group is the data-parallel one
_get_sequence_data_parallel_group = _get_data_parallel_group
_get_sequence_data_parallel_world_size = _get_data_parallel_world_size
_get_sequence_data_parallel_rank = _get_data_parallel_rank


# ---------------------------------------------------------------------------------------------- DeepSpeed's tensor-parallel API
def get_data_parallel_group() -> Any:
    """The data-parallel group: the default process group. RuntimeError before initialisation."""
    return _default_group("get_data_parallel_group")


get_data_parallel_world_size = _get_data_parallel_world_size
get_data_parallel_rank = _get_data_parallel_rank


def get_tensor_model_parallel_group() -> Any:
    """The model-parallel group: this rank alone (made on first use by this rank only, no collective; one per
    process group). RuntimeError before initialisation."""
    global _model_parallel
    world = _default_group("get_tensor_model_parallel_group")
    if _model_parallel is None or _model_parallel[0] is not world:
        import torch.distributed as dist

        _model_parallel = (world, dist.new_group([dist.get_rank()], use_local_synchronization=True))
    return _model_parallel[1]


get_model_parallel_group = get_tensor_model_parallel_group


def get_tensor_model_parallel_world_size() -> int:
    """1: accelops has no tensor parallelism."""
    return 1


get_model_parallel_world_size = get_tensor_model_parallel_world_size


def get_tensor_model_parallel_rank() -> int:
    """0: every rank is rank 0 of its model-parallel group."""
    return 0


get_model_parallel_rank = get_tensor_model_parallel_rank


def get_tensor_model_parallel_src_rank() -> int:
    """The global rank of this rank's model-parallel group's first member: this rank."""
    return _get_data_parallel_rank()


# ---------------------------------------------------------------------------------------------- expert groups
_experts: Optional[tuple] = None  # (default group, {name: (ep group, ep ranks, edp group, edp ranks)})


def _expert_groups() -> dict:
    """This process group's expert groups by name (forgotten when the default group is another one)."""
    global _experts
    world = _default_group("expert groups")
    if _experts is None or _experts[0] is not world:
        _experts = (world, {})
    return _experts[1]


def _create_expert_and_data_parallel(expert_parallel_size_: int, mp_size: Any = None, pp_size: Any = None,
                                     mp_mode: str = "tp", use_data_before_expert_parallel_: bool = False,
                                     folding_spec: Any = None) -> None:
    """Make the expert-parallel and expert-data-parallel groups of ``expert_parallel_size_`` (module
    docstring) unless they exist. ValueError when it does not divide the world size, or for model or
    pipeline parallel sizes above 1."""
    import torch.distributed as dist

    made = _expert_groups()
    size, name = int(expert_parallel_size_), f"ep_size_{expert_parallel_size_}"
    if any(v not in (None, 1) for v in (mp_size, pp_size)) or folding_spec is not None:
        raise ValueError("expert groups with model or pipeline parallelism are not supported by accelops")
    world, rank = dist.get_world_size(), dist.get_rank()
    if size < 1 or world % size:
        raise ValueError(f"the expert-parallel size ({size}) must divide the world size ({world})")
    if name in made:
        return
    runs = [list(range(i * size, (i + 1) * size)) for i in range(world // size)]  # consecutive ranks
    strided = [list(range(i, world, size)) for i in range(size)]  # ranks `size` apart
    parallel, data = (strided, runs) if use_data_before_expert_parallel_ else (runs, strided)
    mine = {}
    for kind, lists in (("ep", parallel), ("edp", data)):
        for ranks in lists:
            group = dist.new_group(ranks)
            if rank in ranks:
                mine[kind] = (group, ranks)
    made[name] = (mine["ep"][0], mine["ep"][1], mine["edp"][0], mine["edp"][1])


def _expert(name: str, index: int) -> Any:
    made = _expert_groups()
    if name not in made:
        raise KeyError(f"no expert group named {name!r} (made: {sorted(made)}); accelops.initialize makes them for "
                       f"the model's MoE layers")
    return made[name][index]


def _get_expert_parallel_group(group_name: str) -> Any:
    """The expert-parallel group ``group_name`` this rank is in (KeyError when it was not made)."""
    return _expert(group_name, 0)


def _get_expert_parallel_group_ranks(group_name: str) -> list:
    return _expert(group_name, 1)


def _get_expert_data_parallel_group(group_name: str) -> Any:
    """The expert-data-parallel group ``group_name`` this rank is in (KeyError when it was not made)."""
    return _expert(group_name, 2)


def _get_expert_data_parallel_group_ranks(group_name: str) -> list:
    return _expert(group_name, 3)


def _get_expert_parallel_group_dict() -> dict:
    return {name: groups[0] for name, groups in _expert_groups().items()} if _initialized() else {}


def _get_expert_data_parallel_group_dict() -> dict:
    return {name: groups[2] for name, groups in _expert_groups().items()} if _initialized() else {}


def _get_expert_parallel_world_size(group_name: str) -> int:
    return len(_get_expert_parallel_group_ranks(group_name))


def _get_expert_data_parallel_world_size(group_name: str) -> int:
    return len(_get_expert_data_parallel_group_ranks(group_name))


def _get_expert_parallel_rank(group_name: str) -> int:
    return _get_expert_parallel_group_ranks(group_name).index(_get_data_parallel_rank())


def _get_expert_data_parallel_rank(group_name: str) -> int:
    return _get_expert_data_parallel_group_ranks(group_name).index(_get_data_parallel_rank())


def _get_expert_parallel_src_rank(group_name: str) -> int:
    """The first global rank of this rank's expert-parallel group."""
    return _get_expert_parallel_group_ranks(group_name)[0]


def _get_expert_broadcast_src_rank(group_name: str) -> int:
    """The first global rank of this rank's expert-data-parallel group (expert broadcasts start there)."""
    return _get_expert_data_parallel_group_ranks(group_name)[0]
