"""Per-rank helper: ``python -m accelops.launcher.rank [options] -- SCRIPT ARGS...``.

Runs under torchrun, mpirun or srun, once per rank. It reads the rank's local rank and the number
of ranks on its node from the launcher's variables (``LOCAL_RANK``/``LOCAL_WORLD_SIZE``, Open MPI's,
MPICH's or SLURM's), optionally binds the rank to its share of the node's cores, then replaces
itself (``exec``) with the user's command, exactly as DeepSpeed's per-node launcher starts ranks::

    python -u SCRIPT --local_rank=N ARGS...      (-m MODULE with --module, SCRIPT alone with --no_python)

Options: ``--module``, ``--no_python``, ``--no_local_rank`` (as ``ds_launch``'s),
``--bind_cores_to_rank`` (cores split evenly by local rank, ``OMP_NUM_THREADS`` set to the share)
and ``--bind_core_list 0,2-5`` (the cores to split; default: the cores this process may use).
Imports no torch.
"""
import os
import sys
from typing import List, Mapping, Optional, Sequence, Tuple

from ..comm.env_mapping import resolve_launch_env
from .errors import LaunchError


def parse_core_list(text: str) -> List[int]:
    """``'0,2-4'`` -> ``[0, 2, 3, 4]``; bad text is a :class:`LaunchError`."""
    cores: List[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
            raise LaunchError(f"--bind_core_list {text!r}: {part!r} is not N or N-M")
        cores.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    if len(set(cores)) != len(cores):
        raise LaunchError(f"--bind_core_list {text!r} names a core twice")
    return cores


def cores_for_rank(cores: Sequence[int], local_rank: int, local_size: int) -> List[int]:
    """The ``local_rank``-th of ``local_size`` equal, contiguous shares of ``cores`` (DeepSpeed
    gives each rank ``len(cores) // local_size`` cores). Fewer cores than ranks is an error."""
    share = len(cores) // local_size
    if share < 1:
        raise LaunchError(f"--bind_cores_to_rank: {len(cores)} core(s) for {local_size} ranks on this node")
    return list(cores[local_rank * share:(local_rank + 1) * share])


def local_rank_and_size(environ: Mapping[str, str]) -> Tuple[int, int]:
    """This rank's local rank and the ranks on its node, from the launcher's variables."""
    launch = resolve_launch_env(environ)
    size = launch.local_world_size
    if size is None:
        value = environ.get("LOCAL_SIZE") or environ.get("SLURM_NTASKS_PER_NODE") or "1"
        size = int(value) if value.isdigit() else 1
    return launch.local_rank, size


def user_argv(script: str, args: Sequence[str], local_rank: Optional[int], module: bool, no_python: bool,
              python: str = sys.executable) -> List[str]:
    """The user's command for one rank (``--local_rank=N`` after the script unless ``local_rank`` is None)."""
    if module and no_python:
        raise LaunchError("--module and --no_python exclude each other")
    extra = [] if local_rank is None else [f"--local_rank={local_rank}"]
    if no_python:
        return [script, *extra, *args]
    return [python, "-u", *(["-m"] if module else []), script, *extra, *args]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m accelops.launcher.rank [options] -- SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    split = argv.index("--")
    opts, rest = argv[:split], argv[split + 1:]
    known = {"--module", "--no_python", "--no_local_rank", "--bind_cores_to_rank"}
    core_list = None
    for opt in opts:
        if opt.startswith("--bind_core_list="):
            core_list = opt.split("=", 1)[1]
        elif opt not in known:
            print(f"accelops.launcher.rank: unknown option {opt!r}", file=sys.stderr)
            return 2
    if not rest:
        print("accelops.launcher.rank: no script after '--'", file=sys.stderr)
        return 2
    try:
        local_rank, local_size = local_rank_and_size(os.environ)
        if "--bind_cores_to_rank" in opts:
            available = parse_core_list(core_list) if core_list else sorted(os.sched_getaffinity(0))
            cores = cores_for_rank(available, local_rank, local_size)
            os.sched_setaffinity(0, cores)
            os.environ["OMP_NUM_THREADS"] = str(len(cores))
        command = user_argv(rest[0], rest[1:], None if "--no_local_rank" in opts else local_rank,
                            "--module" in opts, "--no_python" in opts)
    except (LaunchError, ValueError, RuntimeError) as exc:  # RuntimeError: DistributedInitError
        print(f"accelops.launcher.rank: {exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"accelops.launcher.rank: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
