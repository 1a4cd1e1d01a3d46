"""init_distributed and the small helpers around it. torch.distributed is imported only when called."""
import dataclasses
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional, Union
from urllib.parse import urlsplit

from . import rendezvous
from .env_mapping import LaunchEnv, launcher_vars, resolve_launch_env
from .errors import DistributedInitError

DEFAULT_TIMEOUT = timedelta(minutes=30)
_EXPORTED_SOURCES = ("openmpi", "pmi", "slurm")
_state = {"info": None, "group": None}


@dataclass(frozen=True)
class DistributedInfo:
    """What :func:`init_distributed` set up.

    ``source`` says where rank and world size came from: 'torchrun', 'openmpi', 'pmi', 'slurm',
    'single' (no launcher: a world of one) or 'user' (the default group existed already).
    ``init_method`` is 'env://', 'tcp://host:port', 'file://path', 'local' (a world of one with an
    in-memory store) or ``None`` for a user-made group.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    init_method: Optional[str]
    source: str


def _dist():
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedInitError("this torch build has no torch.distributed support")
    return dist


def _as_timedelta(timeout: Union[None, float, int, timedelta]) -> timedelta:
    """``timeout`` (seconds or a ``timedelta``) as a positive ``timedelta``; ``ValueError`` naming it otherwise."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    expected = f"init_distributed: timeout must be positive: a number of seconds or a timedelta, got {timeout!r}"
    if not isinstance(timeout, timedelta):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ValueError(expected)
        try:
            timeout = timedelta(seconds=float(timeout))
        except (ValueError, OverflowError):  # nan, inf
            raise ValueError(expected) from None
    if not timeout.total_seconds() > 0:
        raise ValueError(expected)
    return timeout


def _check_backend(dist, backend: str) -> None:
    """``ValueError`` unless ``backend`` names torch.distributed backends (``gloo``, ``cpu:gloo,cuda:nccl``)."""
    known = [str(name) for name in dist.Backend.backend_list if name != "undefined"]
    names = [part.split(":")[-1].strip().lower() for part in str(backend).split(",")] if isinstance(backend, str) else []
    if not names or any(name not in known for name in names):
        raise ValueError(f"init_distributed: backend {backend!r} is not a torch.distributed backend; known: "
                         f"{', '.join(known)} (or None: the accelerator's)")


def _user_group_info(dist) -> DistributedInfo:
    try:
        local_rank = resolve_launch_env(os.environ).local_rank
    except DistributedInitError:
        local_rank = 0
    return DistributedInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                           backend=str(dist.get_backend()), init_method=None, source="user")


def _fill_master_from_mpi(launch: LaunchEnv) -> LaunchEnv:
    """Rank 0 of MPI_COMM_WORLD picks address/port and broadcasts them, when mpi4py is installed."""
    try:
        from mpi4py import MPI
    except Exception:  # not installed, or no MPI library it can load
        return launch
    comm = MPI.COMM_WORLD
    if comm.Get_size() != launch.world_size or comm.Get_rank() != launch.rank:
        return launch
    chosen = None
    if comm.Get_rank() == 0:
        chosen = (launch.master_addr or socket.gethostname(), launch.master_port or rendezvous.free_port())
    addr, port = comm.bcast(chosen, root=0)
    return dataclasses.replace(launch, master_addr=addr, master_port=port)


def _parse_init_method(init_method: Optional[str], launch: LaunchEnv, seen):
    """-> (kind, launch with addr/port from a tcp:// URL, file path or None, text to report)."""
    if init_method is None or init_method == "env://":
        return "tcp", launch, None, "env://"
    parts = urlsplit(init_method)
    if parts.scheme == "tcp":
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise DistributedInitError(f"bad init_method {init_method!r}: {exc}", seen) from None
        if not host or not port:
            raise DistributedInitError(f"init_method {init_method!r} must look like tcp://host:port", seen)
        return "tcp", dataclasses.replace(launch, master_addr=host, master_port=port), None, init_method
    if parts.scheme == "file":
        path = parts.path if not parts.netloc else "/" + parts.netloc + parts.path
        if not path:
            raise DistributedInitError(f"init_method {init_method!r} must look like file:///path/to/file", seen)
        return "file", launch, path, init_method
    raise DistributedInitError(f"unsupported init_method {init_method!r}: expected env://, tcp://host:port "
                               "or file:///path", seen)


def _require_master(launch: LaunchEnv, seen) -> None:
    missing = [name for name, value in (("MASTER_ADDR", launch.master_addr), ("MASTER_PORT", launch.master_port))
               if value is None]
    if missing:
        raise DistributedInitError(
            f"{' and '.join(missing)} not set: a {launch.source} launch of world size {launch.world_size} needs "
            "MASTER_ADDR and MASTER_PORT (the host and a free port of rank 0), or init_method='tcp://host:port'"
            + ("; with mpi4py installed and the MPI world matching, rank 0 broadcasts them"
               if launch.source in ("openmpi", "pmi") else ""),
            seen)


def _export(launch: LaunchEnv) -> None:
    values = {"RANK": launch.rank, "WORLD_SIZE": launch.world_size, "LOCAL_RANK": launch.local_rank,
              "MASTER_ADDR": launch.master_addr, "MASTER_PORT": launch.master_port}
    for name, value in values.items():
        if value is not None:
            os.environ[name] = str(value)


def _set_device(local_rank: int, seen) -> None:
    from accelops.accelerator import get_accelerator

    accelerator = get_accelerator()
    count = accelerator.device_count()
    if local_rank < count:
        accelerator.set_device(local_rank)
    elif accelerator.name != "cpu":  # the CPU is one shared device; elsewhere ranks would share a device
        raise DistributedInitError(f"local rank {local_rank} has no {accelerator.name} device: {count} visible "
                                   f"on this host; start at most {count} processes per host", seen)


def init_distributed(backend: Optional[str] = None, init_method: Optional[str] = None,
                     timeout: Union[None, float, int, timedelta] = None) -> DistributedInfo:
    """Initialise the default ``torch.distributed`` process group from the launcher's variables.

    ``backend`` defaults to ``get_accelerator().communication_backend_name()`` ('nccl', 'gloo',
    'ccl', ...). Rank, world size, local rank and master address/port come from torchrun, Open MPI,
    MPICH/Intel MPI (PMI) or SLURM variables (see :mod:`accelops.comm.env_mapping`); with none of
    them this is a world of one. ``init_method`` is ``None``/'env://' (MASTER_ADDR/MASTER_PORT),
    'tcp://host:port' (overrides them) or 'file:///path' (a shared file that must not hold a
    previous run's keys). ``timeout`` (seconds or ``timedelta``, default 30 min) bounds the wait
    for peers and is passed to ``init_process_group``.

    Side effects: imports torch.distributed; selects the accelerator and, when it has more than
    ``local_rank`` devices, calls ``set_device(local_rank)`` (CPU with one device: no call; another
    accelerator with too few devices: an error); when the values came from Open MPI, PMI or SLURM,
    writes RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT into ``os.environ`` so later
    code sees a torchrun-like environment; with mpi4py installed and no master address/port, an
    Open MPI or PMI job broadcasts rank 0's host name and a free port (this initialises MPI). Rank 0
    serves the rendezvous store (under torchrun, its agent does).

    Calling it again returns the same :class:`DistributedInfo` and does nothing. If the user already
    initialised the default group, nothing is changed and the info is read from torch.distributed
    (source 'user'). Raises :class:`DistributedInitError` for bad or conflicting variables, a
    missing master address/port, a port in use on rank 0, or peers missing after ``timeout``
    ("k of n ranks joined after t s").
    """
    dist = _dist()
    if dist.is_initialized():
        if _state["info"] is not None and _state["group"] is dist.GroupMember.WORLD:
            return _state["info"]
        info = _user_group_info(dist)
        _state.update(info=info, group=dist.GroupMember.WORLD)
        return info

    timeout = _as_timedelta(timeout)
    launch = resolve_launch_env(os.environ)
    seen = launch.seen
    kind, launch, path, reported = _parse_init_method(init_method, launch, seen)
    local_world = launch.world_size == 1 and (init_method is None
                                              or (init_method == "env://" and launch.master_port is None))
    if kind == "tcp" and not local_world:
        if (launch.master_addr is None or launch.master_port is None) and launch.source in ("openmpi", "pmi"):
            launch = _fill_master_from_mpi(launch)
        _require_master(launch, seen)
    if launch.source in _EXPORTED_SOURCES:
        _export(launch)
        seen = launcher_vars(os.environ)

    _set_device(launch.local_rank, seen)
    if backend is None:
        from accelops.accelerator import get_accelerator

        backend = get_accelerator().communication_backend_name()
    _check_backend(dist, backend)

    if local_world:
        store, reported = dist.HashStore(), "local"
    elif kind == "file":
        store = rendezvous.file_store(path, launch.world_size)
    else:
        # torchrun's agent serves the store on MASTER_PORT itself and keeps it across worker restarts,
        # so every rank is a client there and the keys of each restart attempt get their own prefix.
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = rendezvous.tcp_store(launch.master_addr, launch.master_port, launch.rank, launch.world_size,
                                     timeout, seen, agent_store=agent_store)
        if agent_store:
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            store = dist.PrefixStore(f"accelops/attempt_{attempt}", store)
    where = reported if kind == "file" else f"{launch.master_addr}:{launch.master_port} via {reported}"
    hint = ""
    if launch.source == "slurm":
        hint = "; under SLURM start one process per task with srun (a batch script alone is one process)"
    rendezvous.wait_for_peers(store, launch.rank, launch.world_size, timeout, where, seen, hint)
    dist.init_process_group(backend=backend, store=store, rank=launch.rank, world_size=launch.world_size,
                            timeout=timeout)
    info = DistributedInfo(rank=launch.rank, world_size=launch.world_size, local_rank=launch.local_rank,
                           backend=str(dist.get_backend()), init_method=reported, source=launch.source)
    _state.update(info=info, group=dist.GroupMember.WORLD)
    return info


def is_initialized() -> bool:
    """True when the default process group exists (made by us or by the user). Imports torch.distributed."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank; 0 when no process group is initialised."""
    if not is_initialized():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def get_world_size() -> int:
    """The number of ranks in the default group; 1 when no process group is initialised."""
    if not is_initialized():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def get_local_rank() -> int:
    """This process's rank on its host: from :func:`init_distributed` when it ran, else from the
    launcher variables (0 when there are none). Raises :class:`DistributedInitError` on bad variables."""
    info = _state["info"]
    if info is not None and is_initialized():
        return info.local_rank
    return resolve_launch_env(os.environ).local_rank


def destroy() -> None:
    """Destroy the default process group if there is one, and forget the cached info. Idempotent.

    To initialise again on the same MASTER_PORT, every rank must have called this first (rank 0's store
    lives until then); otherwise use a new port."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _state.update(info=None, group=None)
