"""init_distributed and the small helpers around it. torch.distributed is imported only when called."""
import dataclasses
import operator
import os
import socket
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping, Optional, Union
from urllib.parse import urlsplit

from .._logging import get_logger
from . import rendezvous, teardown
from .env_mapping import FAMILIES, LaunchEnv, launcher_vars, resolve_launch_env
from .errors import DistributedInitError

# DeepSpeed 0.19.5 (deepspeed/constants.py): TORCH_DISTRIBUTED_DEFAULT_PORT = 29500 and
# default_pg_timeout = timedelta(minutes=int(os.getenv("DEEPSPEED_TIMEOUT", default=30))).
TORCH_DISTRIBUTED_DEFAULT_PORT = 29500
DEFAULT_TIMEOUT = timedelta(minutes=30)
_EXPORTED_SOURCES = ("openmpi", "pmi", "slurm", "args")
_MPI_VARS = tuple(name for fam in FAMILIES if fam.source in ("openmpi", "pmi")
                  for name in (fam.rank, fam.size) + fam.local_rank + fam.local_size)
_state = {"info": None, "group": None}
logger = get_logger(__name__)


@dataclass(frozen=True)
class DistributedInfo:
    """What :func:`init_distributed` set up.

    ``source`` says where rank and world size came from: 'torchrun', 'openmpi', 'pmi', 'slurm',
    'args' (the ``rank``/``world_size`` arguments), 'single' (no launcher: a world of one) or 'user'
    (the default group existed already).
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


def _default_timeout() -> timedelta:
    """DeepSpeed's default: ``DEEPSPEED_TIMEOUT`` minutes when set, else 30 minutes. Read at call time."""
    raw = os.environ.get("DEEPSPEED_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        minutes = float(raw)
    except ValueError:
        minutes = float("nan")
    if not 0 < minutes < float("inf"):
        raise ValueError(f"init_distributed: DEEPSPEED_TIMEOUT must be a positive number of minutes, got {raw!r}")
    return timedelta(minutes=minutes)


def _as_timedelta(timeout: Union[None, float, int, timedelta]) -> timedelta:
    """``timeout`` (seconds or a ``timedelta``) as a positive ``timedelta``; ``ValueError`` naming it otherwise."""
    if timeout is None:
        return _default_timeout()
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
    _check_backend_built(dist, backend, names, known)


#: Why a torch build may lack one of torch.distributed's own backends.
_BACKEND_BUILDS = {
    "nccl": "NCCL comes only with torch's CUDA and ROCm builds",
    "xccl": "XCCL comes only with torch's Intel XPU builds",
    "ucc": "UCC comes only with torch builds compiled with USE_UCC=1",
    "mpi": "MPI comes only with torch built from source against an MPI library",
}


def _check_backend_built(dist, backend: str, names, known) -> None:
    """``DistributedInitError`` when a named backend is known to torch but not built into this torch
    (``nccl`` on a CPU-only build): names it, says why, and lists the backends that are available."""
    is_available = getattr(dist, "is_backend_available", None)
    if is_available is None:  # an older torch: it raises its own error at init
        return
    missing = [name for name in dict.fromkeys(names) if not is_available(name)]
    if not missing:
        return
    import torch

    usable = [name for name in known if name != "fake" and is_available(name)]
    why = "; ".join(f"{_BACKEND_BUILDS.get(name, f'{name} is not built into it')}" for name in missing)
    raise DistributedInitError(
        f"init_distributed: backend {backend!r} is not available in this torch ({torch.__version__}): "
        f"{why}. Available here: {', '.join(usable) or 'none'}; pass dist_backend='gloo' (CPU) or None (the "
        f"accelerator's backend), or install a torch build with {', '.join(missing)}")


def _user_group_info(dist) -> DistributedInfo:
    try:
        local_rank = resolve_launch_env(os.environ).local_rank
    except DistributedInitError:
        local_rank = 0
    return DistributedInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                           backend=str(dist.get_backend()), init_method=None, source="user")


def _fill_master_from_mpi(launch: LaunchEnv, default_port: Optional[int] = None) -> LaunchEnv:
    """Rank 0 of MPI_COMM_WORLD picks address/port and broadcasts them, when mpi4py is installed.

    The port is MASTER_PORT when known, else ``default_port`` (init_distributed's ``distributed_port``,
    as DeepSpeed's ``mpi_discovery`` does), else a free port of rank 0."""
    try:
        from mpi4py import MPI
    except Exception:  # not installed, or no MPI library it can load
        return launch
    comm = MPI.COMM_WORLD
    if comm.Get_size() != launch.world_size or comm.Get_rank() != launch.rank:
        return launch
    chosen = None
    if comm.Get_rank() == 0:
        chosen = (launch.master_addr or socket.gethostname(),
                  launch.master_port or default_port or rendezvous.free_port())
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
        launch_kind = (f"world size {launch.world_size} from the rank/world_size arguments" if launch.source == "args"
                       else f"a {launch.source} launch of world size {launch.world_size}")
        raise DistributedInitError(
            f"{' and '.join(missing)} not set: {launch_kind} needs "
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


def _check_flag(name: str, value, allow_none: bool = False) -> None:
    if isinstance(value, bool) or (allow_none and value is None):
        return
    raise ValueError(f"init_distributed: {name} must be True or False{' or None' if allow_none else ''}, "
                     f"got {value!r}")


def _check_int(name: str, value, ok, expected: str) -> int:
    """``value`` as an int when it is one (bools are not) and ``ok(value)``; ``ValueError`` naming ``name``."""
    number = None
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            pass
    if number is None or not ok(number):
        raise ValueError(f"init_distributed: {name} must be {expected}, got {value!r}")
    return number


def _merge_backend(dist_backend: Optional[str], backend: Optional[str]) -> Optional[str]:
    """``backend=`` is accelops' older name of DeepSpeed's ``dist_backend=``; both may be given only if equal."""
    if dist_backend is not None and backend is not None and dist_backend != backend:
        raise ValueError(f"init_distributed: dist_backend={dist_backend!r} and backend={backend!r} disagree; "
                         "backend is an alias of dist_backend, pass one of them")
    return backend if dist_backend is None else dist_backend


def _warn_unused_config(config: Any) -> None:
    """DeepSpeed reads only the comms logger section of ``config``; accelops has no comms logger."""
    if config is None:
        return
    if isinstance(config, Mapping):
        section = config.get("comms_logger")
        enabled = isinstance(section, Mapping) and bool(section.get("enabled"))
    else:  # a DeepSpeedConfig: config.comms_config.comms_logger_enabled
        enabled = bool(getattr(getattr(config, "comms_config", None), "comms_logger_enabled", False))
    if enabled:
        warnings.warn("init_distributed: config enables comms_logger, which accelops does not implement; "
                      "collectives run unlogged", stacklevel=3)


def _apply_rank_args(launch: LaunchEnv, rank: int, world_size: int) -> LaunchEnv:
    """``rank``/``world_size`` arguments (>= 0) replace the launcher's values (source 'args')."""
    new_rank = rank if rank >= 0 else launch.rank
    new_size = world_size if world_size >= 0 else launch.world_size
    if (new_rank, new_size) == (launch.rank, launch.world_size):
        return launch
    if new_rank >= new_size:
        origin = "no launcher variables" if launch.source == "single" else f"from the {launch.source} variables"
        rank_text = f"rank={new_rank}" if rank >= 0 else f"rank {new_rank} ({origin})"
        size_text = f"world_size={new_size}" if world_size >= 0 else f"world size {new_size} ({origin})"
        raise ValueError(f"init_distributed: {rank_text} must be less than {size_text}")
    addr = launch.master_addr
    if new_size != launch.world_size and not launch.seen.get("MASTER_ADDR") and launch.source != "slurm":
        addr = None  # the loopback default was inferred from the launcher's world size, which no longer holds
    return dataclasses.replace(launch, rank=new_rank, world_size=new_size, master_addr=addr, source="args")


def _resolve(auto_mpi_discovery: bool, world_size: int) -> LaunchEnv:
    """The launcher variables, without the MPI ones when ``auto_mpi_discovery`` is False."""
    if auto_mpi_discovery:
        return resolve_launch_env(os.environ)
    launch = resolve_launch_env({k: v for k, v in os.environ.items() if k not in _MPI_VARS})
    mpi_sizes = [name for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE") if os.environ.get(name, "1").strip() != "1"]
    if launch.source == "single" and world_size < 0 and mpi_sizes:
        raise DistributedInitError(
            "auto_mpi_discovery=False: the MPI variables are not used and no torchrun or SLURM variables are "
            "set, so every process would be a world of one; pass auto_mpi_discovery=True, set RANK, WORLD_SIZE, "
            "MASTER_ADDR and MASTER_PORT, or pass rank= and world_size=", launcher_vars(os.environ))
    return launch


def init_distributed(dist_backend: Optional[str] = None,
                     auto_mpi_discovery: bool = True,
                     distributed_port: int = TORCH_DISTRIBUTED_DEFAULT_PORT,
                     verbose: bool = True,
                     timeout: Union[None, float, int, timedelta] = None,
                     init_method: Optional[str] = None,
                     dist_init_required: Optional[bool] = None,
                     config: Any = None,
                     rank: int = -1,
                     world_size: int = -1,
                     *,
                     backend: Optional[str] = None) -> DistributedInfo:
    """Initialise the default ``torch.distributed`` process group from the launcher's variables.

    DeepSpeed's signature (``deepspeed.comm.init_distributed``, 0.19.5); returns a
    :class:`DistributedInfo` where DeepSpeed returns ``None``.

    ``dist_backend`` (alias ``backend``, accelops' older keyword; giving both with different values
    is a ``ValueError``) defaults to ``get_accelerator().communication_backend_name()`` ('nccl',
    'gloo', 'ccl', ...). Rank, world size, local rank and master address/port come from torchrun,
    Open MPI, MPICH/Intel MPI (PMI) or SLURM variables (see :mod:`accelops.comm.env_mapping`);
    with none of them this is a world of one.

    - ``auto_mpi_discovery``: use Open MPI / PMI variables (and mpi4py, when installed, to find the
      master). False ignores them, as DeepSpeed then does; an MPI world larger than one with no
      other launcher variables is then an error rather than N separate worlds of one.
    - ``distributed_port``: the master port when MASTER_PORT is unset, for MPI launches (as
      DeepSpeed's MPI discovery), SLURM and the ``rank``/``world_size`` arguments. torchrun always
      sets MASTER_PORT, so RANK/WORLD_SIZE without it stay an error; a world of one needs no port.
    - ``verbose``: rank 0 logs one INFO line on ``logging.getLogger('accelops.comm.init')``.
    - ``timeout`` (seconds or ``timedelta``; default ``DEEPSPEED_TIMEOUT`` minutes, else 30, read
      at call time) bounds the wait for peers and is the process group's timeout.
    - ``init_method``: ``None``/'env://' (MASTER_ADDR/MASTER_PORT), 'tcp://host:port' (overrides
      them) or 'file:///path' (a shared file that must not hold a previous run's keys).
    - ``dist_init_required``: ``None`` or True initialise unless already initialised; False
      initialises nothing: it returns the info of an existing group and raises
      :class:`DistributedInitError` when there is none (DeepSpeed asserts).
    - ``config``: accepted; DeepSpeed uses only its comms logger section, which accelops does not
      implement: enabling it warns, nothing else is read.
    - ``rank``, ``world_size``: values >= 0 replace the launcher's (source 'args'); -1 takes them
      from the launcher. ``rank`` must be less than the world size.

    Side effects: imports torch.distributed; selects the accelerator and, when it has more than
    ``local_rank`` devices, calls ``set_device(local_rank)`` (CPU with one device: no call; another
    accelerator with too few devices: an error); when the values came from Open MPI, PMI, SLURM or
    the ``rank``/``world_size`` arguments, writes RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
    MASTER_PORT into ``os.environ`` so later code sees a torchrun-like environment; with mpi4py
    installed and no master address/port, an Open MPI or PMI job broadcasts rank 0's host name and
    port (this initialises MPI). Rank 0 serves the rendezvous store (under torchrun, its agent does).

    Calling it again returns the same :class:`DistributedInfo` and does nothing. If the user already
    initialised the default group, nothing is changed and the info is read from torch.distributed
    (source 'user'). A group this function creates is destroyed at interpreter exit unless the
    script destroyed it (see :mod:`accelops.comm.teardown`: gloo otherwise aborts now and then).
    Bad arguments are a ``ValueError`` naming the argument. Raises
    :class:`DistributedInitError` for bad or conflicting variables, a backend this torch build lacks
    (naming what it has), a missing master address/port, a port in use on rank 0, or peers missing after
    ``timeout`` ("k of n ranks joined after t s").
    """
    backend = _merge_backend(dist_backend, backend)
    _check_flag("auto_mpi_discovery", auto_mpi_discovery)
    _check_flag("verbose", verbose)
    _check_flag("dist_init_required", dist_init_required, allow_none=True)
    distributed_port = _check_int("distributed_port", distributed_port, lambda p: 1 <= p <= 65535,
                                  "a TCP port (1-65535)")
    rank = _check_int("rank", rank, lambda r: r >= -1, "an int >= 0, or -1 to take it from the launcher")
    world_size = _check_int("world_size", world_size, lambda n: n == -1 or n >= 1,
                            "an int >= 1, or -1 to take it from the launcher")
    timeout = _as_timedelta(timeout)
    _warn_unused_config(config)

    dist = _dist()
    if dist.is_initialized():
        if _state["info"] is not None and _state["group"] is dist.GroupMember.WORLD:
            return _state["info"]
        info = _user_group_info(dist)
        _state.update(info=info, group=dist.GroupMember.WORLD)
        return info
    if dist_init_required is False:
        raise DistributedInitError("init_distributed(dist_init_required=False): torch.distributed is not "
                                   "initialised; initialise it first, or pass dist_init_required=None or True")

    launch = _apply_rank_args(_resolve(auto_mpi_discovery, world_size), rank, world_size)
    seen = launch.seen
    kind, launch, path, reported = _parse_init_method(init_method, launch, seen)
    local_world = launch.world_size == 1 and (init_method is None
                                              or (init_method == "env://" and launch.master_port is None))
    if kind == "tcp" and not local_world:
        if (launch.master_addr is None or launch.master_port is None) and launch.source in ("openmpi", "pmi"):
            launch = _fill_master_from_mpi(launch, distributed_port)
        # torchrun always sets MASTER_PORT; an MPI job whose master host is still unknown fails below anyway.
        mpi_without_host = launch.source in ("openmpi", "pmi") and launch.master_addr is None
        if launch.master_port is None and launch.source != "torchrun" and not mpi_without_host:
            launch = dataclasses.replace(launch, master_port=distributed_port)
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
    teardown.destroy_at_exit(destroy)
    info = DistributedInfo(rank=launch.rank, world_size=launch.world_size, local_rank=launch.local_rank,
                           backend=str(dist.get_backend()), init_method=reported, source=launch.source)
    _state.update(info=info, group=dist.GroupMember.WORLD)
    if verbose and info.rank == 0:
        logger.info("initialised torch.distributed: world size %d, backend %s, init_method %s, ranks from %s",
                    info.world_size, info.backend, info.init_method, info.source)
    return info


def is_initialized() -> bool:
    """True when the default process group exists (made by us or by the user). Imports torch.distributed.

    DeepSpeed's answers False for a group the user made without calling its init_distributed."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def get_rank(group=None) -> int:
    """This process's rank in ``group`` (default: the default group): ``torch.distributed.get_rank``,
    so -1 when not a member. Before initialisation, 0 for the default group (DeepSpeed asserts
    there; returning the single-process value lets code run unchanged without a launcher)."""
    if group is None and not is_initialized():
        return 0
    import torch.distributed as dist

    return dist.get_rank(group)


def get_world_size(group=None) -> int:
    """The number of ranks in ``group`` (default: the default group): ``torch.distributed.get_world_size``.
    Before initialisation, 1 for the default group (DeepSpeed asserts there)."""
    if group is None and not is_initialized():
        return 1
    import torch.distributed as dist

    return dist.get_world_size(group)


def get_local_rank() -> int:
    """This process's rank on its host: from :func:`init_distributed` when it ran, else from the
    launcher variables (0 when there are none). Raises :class:`DistributedInitError` on bad variables.

    DeepSpeed reads LOCAL_RANK, then OMPI_COMM_WORLD_LOCAL_RANK, else 0, and asserts before init;
    this reads the same variables plus PMI and SLURM ones (see :mod:`accelops.comm.env_mapping`)."""
    info = _state["info"]
    if info is not None and is_initialized():
        return info.local_rank
    return resolve_launch_env(os.environ).local_rank


def _forget() -> None:
    _state.update(info=None, group=None)


def destroy() -> None:
    """Destroy the default process group if there is one, and forget the cached info. Idempotent.

    To initialise again on the same MASTER_PORT, every rank must have called this first (rank 0's store
    lives until then); otherwise use a new port."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _forget()
