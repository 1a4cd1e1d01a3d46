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
* ``initialize(ep_size=1, mpu=None)`` accepts only what accelops has: ``mpu`` must be None (as in
  ``accelops.initialize``) and ``ep_size`` 1 (mixture of experts is not implemented); expert-parallel groups
  do not exist.
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
    """DeepSpeed's ``groups.initialize``: nothing to set up for data parallelism. ValueError for an ``mpu``
    (accelops has no model parallelism), NotImplementedError for ``ep_size`` other than 1."""
    if mpu is not None:
        raise ValueError("groups.initialize(mpu=...): accelops has no model parallelism; pass mpu=None")
    if ep_size != 1:
        raise NotImplementedError(f"groups.initialize(ep_size={ep_size!r}): accelops has no mixture of experts "
                                  f"(expert parallelism); only ep_size=1 is accepted")


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
