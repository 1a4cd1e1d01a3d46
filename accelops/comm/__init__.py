"""Distributed set-up: ``init_distributed()`` reads torchrun, MPI or SLURM variables and initialises
``torch.distributed`` on the accelerator's backend. Importing this package imports no torch and
initialises nothing; see :func:`init_distributed` for what calling it does.
"""
from .env_mapping import LaunchEnv, resolve_launch_env
from .errors import DistributedInitError
from .init import (DistributedInfo, destroy, get_local_rank, get_rank, get_world_size, init_distributed,
                   is_initialized)
from .nodelist import expand_nodelist, first_host

__all__ = [
    "DistributedInfo", "DistributedInitError", "LaunchEnv", "destroy", "expand_nodelist", "first_host",
    "get_local_rank", "get_rank", "get_world_size", "init_distributed", "is_initialized", "resolve_launch_env",
]
