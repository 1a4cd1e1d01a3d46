"""Launcher variables -> rank, world size, local rank, master address and port. A pure function.

Sources, by priority (the first one present wins):

==========  ===========================  ===========================  ================================  ====================
source      rank                         world size                   local rank                        local world size
==========  ===========================  ===========================  ================================  ====================
torchrun    RANK                         WORLD_SIZE                   LOCAL_RANK (else 0)               LOCAL_WORLD_SIZE
openmpi     OMPI_COMM_WORLD_RANK         OMPI_COMM_WORLD_SIZE         OMPI_COMM_WORLD_LOCAL_RANK        OMPI_COMM_WORLD_LOCAL_SIZE
pmi         PMI_RANK                     PMI_SIZE                     MPI_LOCALRANKID / PMI_LOCAL_RANK  MPI_LOCALNRANKS / PMI_LOCAL_SIZE
slurm       SLURM_PROCID                 SLURM_NTASKS                 SLURM_LOCALID (else 0)            -
single      0                            1                            0                                 1
==========  ===========================  ===========================  ================================  ====================

Master address and port come from MASTER_ADDR / MASTER_PORT when set. Otherwise: a world of one
uses 127.0.0.1; an MPI job whose ranks all share one host (local world size == world size) uses
127.0.0.1; SLURM uses the first host of SLURM_JOB_NODELIST (or SLURM_NODELIST) and the port
``15000 + SLURM_JOB_ID % 20000``. Anything still unknown is left ``None`` for the caller to fill
(e.g. by an mpi4py broadcast) or to report.

torchrun, Open MPI and PMI variables that are present together must agree; SLURM's are not
compared with them, because torchrun under ``srun`` and ``mpirun`` inside ``sbatch`` legitimately
differ from SLURM_PROCID. SLURM counts only when both SLURM_PROCID and SLURM_NTASKS are set.
"""
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from .errors import DistributedInitError
from .nodelist import first_host


@dataclass(frozen=True)
class _Family:
    source: str
    rank: str
    size: str
    local_rank: Tuple[str, ...]
    local_size: Tuple[str, ...]


FAMILIES = (
    _Family("torchrun", "RANK", "WORLD_SIZE", ("LOCAL_RANK",), ("LOCAL_WORLD_SIZE",)),
    _Family("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", ("OMPI_COMM_WORLD_LOCAL_RANK",),
            ("OMPI_COMM_WORLD_LOCAL_SIZE",)),
    _Family("pmi", "PMI_RANK", "PMI_SIZE", ("MPI_LOCALRANKID", "PMI_LOCAL_RANK"), ("MPI_LOCALNRANKS", "PMI_LOCAL_SIZE")),
    _Family("slurm", "SLURM_PROCID", "SLURM_NTASKS", ("SLURM_LOCALID",), ()),
)
EXTRA_VARS = ("MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_JOB_ID")
_STRICT = ("torchrun", "openmpi", "pmi")  # must be complete and agree with each other


@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher variables say. ``master_addr``/``master_port`` may be ``None`` (unknown)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: Optional[int]
    master_addr: Optional[str]
    master_port: Optional[int]
    source: str
    seen: Dict[str, str] = field(default_factory=dict, compare=False)


def launch_var_names() -> Tuple[str, ...]:
    """Every variable read here (each source's rank, size, local rank and local size; master address
    and port; SLURM's node list and job id), sorted."""
    names = set(EXTRA_VARS)
    for fam in FAMILIES:
        names.update((fam.rank, fam.size) + fam.local_rank + fam.local_size)
    return tuple(sorted(names))


def launcher_vars(env: Mapping[str, str]) -> Dict[str, str]:
    """The launcher-related variables present in ``env`` (name -> value)."""
    return {name: env[name] for name in launch_var_names() if name in env}


def _int(env: Mapping[str, str], name: str, seen, minimum: int = 0) -> int:
    raw = env[name]
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise DistributedInitError(f"{name} must be an integer, got {raw!r}", seen) from None
    if value < minimum:
        raise DistributedInitError(f"{name} must be >= {minimum}, got {value}", seen)
    return value


def _first(env: Mapping[str, str], names, seen, minimum: int) -> Tuple[Optional[str], Optional[int]]:
    for name in names:
        if str(env.get(name, "")).strip():
            return name, _int(env, name, seen, minimum)
    return None, None


def _read_family(fam: _Family, env: Mapping[str, str], seen) -> Optional[dict]:
    has_rank, has_size = fam.rank in env, fam.size in env
    if not has_rank and not has_size:
        return None
    if has_rank != has_size:
        if fam.source not in _STRICT:
            return None  # e.g. SLURM_PROCID in a batch step without --ntasks: not a launch
        present, missing = (fam.rank, fam.size) if has_rank else (fam.size, fam.rank)
        raise DistributedInitError(f"{present} is set but {missing} is not; a {fam.source} launch sets both", seen)
    rank = _int(env, fam.rank, seen, 0)
    size = _int(env, fam.size, seen, 1)
    if rank >= size:
        raise DistributedInitError(f"{fam.rank}={rank} must be less than {fam.size}={size}", seen)
    lr_name, local_rank = _first(env, fam.local_rank, seen, 0)
    ls_name, local_size = _first(env, fam.local_size, seen, 1)
    if local_size is not None and local_size > size:
        raise DistributedInitError(f"{ls_name}={local_size} must not exceed {fam.size}={size}", seen)
    if local_rank is not None and local_size is not None and local_rank >= local_size:
        raise DistributedInitError(f"{lr_name}={local_rank} must be less than {ls_name}={local_size}", seen)
    return {"fam": fam, "rank": rank, "world_size": size, "local_rank": local_rank or 0,
            "local_world_size": local_size, "local_rank_var": lr_name}


def _check_agree(found, seen) -> None:
    strict = [f for f in found if f["fam"].source in _STRICT]
    for other in strict[1:]:
        a, b = strict[0], other
        for key, attr in (("rank", "rank"), ("world_size", "size")):
            if a[key] != b[key]:
                na, nb = getattr(a["fam"], attr), getattr(b["fam"], attr)
                raise DistributedInitError(f"conflicting launcher variables: {na}={a[key]} but {nb}={b[key]}; "
                                           "unset the stale ones", seen)
        if a["local_rank_var"] and b["local_rank_var"] and a["local_rank"] != b["local_rank"]:
            raise DistributedInitError(f"conflicting launcher variables: {a['local_rank_var']}={a['local_rank']} "
                                       f"but {b['local_rank_var']}={b['local_rank']}; unset the stale ones", seen)


def _master(env: Mapping[str, str], chosen: dict, source: str, seen) -> Tuple[Optional[str], Optional[int]]:
    addr = str(env.get("MASTER_ADDR", "")).strip() or None
    port = None
    if str(env.get("MASTER_PORT", "")).strip():
        port = _int(env, "MASTER_PORT", seen, 1)
        if port > 65535:
            raise DistributedInitError(f"MASTER_PORT must be a TCP port (1-65535), got {port}", seen)
    size = chosen["world_size"]
    if addr is None and (size == 1 or (source in ("openmpi", "pmi") and chosen["local_world_size"] == size)):
        addr = "127.0.0.1"
    if source == "slurm":
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if addr is None and nodelist:
            try:
                addr = first_host(nodelist)
            except ValueError as exc:
                raise DistributedInitError(str(exc), seen) from None
        if port is None and str(env.get("SLURM_JOB_ID", "")).strip():
            port = 15000 + _int(env, "SLURM_JOB_ID", seen, 0) % 20000
    return addr, port


def resolve_launch_env(env: Mapping[str, str]) -> LaunchEnv:
    """Read rank, world size, local rank and master address/port from launcher variables in ``env``.

    Pure: reads only ``env`` (any mapping; pass ``os.environ`` for the real thing), writes nothing.
    See the module docstring for the variables of each source and their priority. Raises
    :class:`DistributedInitError` for non-integers, negative values, rank >= world size, a rank
    variable without its size partner (or the reverse), and torchrun/Open MPI/PMI variables that
    disagree. The error lists the launcher variables seen.
    """
    seen = launcher_vars(env)
    found = [f for f in (_read_family(fam, env, seen) for fam in FAMILIES) if f is not None]
    _check_agree(found, seen)
    if found:
        chosen = found[0]
        source = chosen["fam"].source
    else:
        chosen = {"rank": 0, "world_size": 1, "local_rank": 0, "local_world_size": 1}
        source = "single"
    addr, port = _master(env, chosen, source, seen)
    return LaunchEnv(rank=chosen["rank"], world_size=chosen["world_size"], local_rank=chosen["local_rank"],
                     local_world_size=chosen["local_world_size"], master_addr=addr, master_port=port,
                     source=source, seen=seen)
