"""``ds_launch``: DeepSpeed's multi-node launcher on torchrun (``python -m accelops.launcher``).

Modules, one job each: ``hostfile`` (the resource pool), ``resources`` (``--include``/``--exclude``,
``--num_nodes``, ``--num_gpus``), ``environment`` (variables and devices every rank gets),
``commands`` (the exact command lines), ``kinds`` (one description per launcher kind: local, ssh,
pdsh, openmpi, mpich, slurm), ``plan`` (all of it together, from the flags), ``cli``
(flags, ``--dry_run``, running the plan), ``ports`` (a busy rendezvous port), ``supervise``
(running a plan: reachability check, output, one failure stops all), ``local`` (the same for one
node on this host), ``failures`` (reading a failed node's output), ``guard`` (runs each node's
torchrun: stops the node when the connection closes or ``ds_launch`` ends) and ``rank`` (the
per-rank helper). Importing this package imports no torch and starts nothing.
"""
from .errors import LaunchError

__all__ = ["LaunchError"]
