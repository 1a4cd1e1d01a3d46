"""Distributed set-up and DeepSpeed's ``deepspeed.comm`` API.

``init_distributed()`` reads torchrun, MPI or SLURM variables and initialises ``torch.distributed``
on the accelerator's backend; the collectives, point-to-point calls and group helpers
(:mod:`accelops.comm.collectives`) are thin pass-throughs to ``torch.distributed`` with DeepSpeed's
signatures, so ``from accelops import comm as dist`` replaces ``from deepspeed import comm as dist``.
Importing this package imports no torch and initialises nothing; see :func:`init_distributed` for
what calling it does.
"""
from .collectives import (ReduceOp, all_gather, all_gather_into_tensor, all_gather_object, all_reduce, all_to_all,
                          all_to_all_single, barrier, broadcast, broadcast_object_list, destroy_process_group, gather,
                          get_global_rank, get_world_group, irecv, isend, monitored_barrier, new_group, recv, reduce,
                          reduce_scatter, reduce_scatter_tensor, scatter, send)
from .env_mapping import LaunchEnv, resolve_launch_env
from .errors import DistributedInitError
from .init import (DistributedInfo, destroy, get_local_rank, get_rank, get_world_size, init_distributed,
                   is_initialized)
from .nodelist import expand_nodelist, first_host

__all__ = [
    "DistributedInfo", "DistributedInitError", "LaunchEnv", "ReduceOp", "all_gather", "all_gather_into_tensor",
    "all_gather_object", "all_reduce", "all_to_all", "all_to_all_single", "barrier", "broadcast",
    "broadcast_object_list", "destroy", "destroy_process_group", "expand_nodelist", "first_host", "gather",
    "get_global_rank", "get_local_rank", "get_rank", "get_world_group", "get_world_size", "init_distributed", "irecv",
    "is_initialized", "isend", "monitored_barrier", "new_group", "recv", "reduce", "reduce_scatter",
    "reduce_scatter_tensor", "resolve_launch_env", "scatter", "send",
]
