"""The launcher kinds, one description each: what sets ``local``, ssh, pdsh, mpirun and srun apart.

The planner, the supervisor and the command line ask a kind's :class:`LauncherKind` instead of
comparing its name. Two shapes exist:

* per node (local, ssh, pdsh): torchrun on each node under the node guard
  (:mod:`accelops.launcher.guard`); ``local`` runs it here, the others reach each node through a
  remote login shell with :attr:`LauncherKind.reach`, one process per node;
* every rank (openmpi, mpich, slurm): one mpirun / srun line, from :attr:`LauncherKind.every_rank`,
  starts every rank itself.

Adding a kind (Intel MPI, MVAPICH) is one description in :data:`KINDS` and, for a new command
line, its builder in :mod:`accelops.launcher.commands`; nothing else names kinds.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import commands
from .commands import Command, EveryRank
from .errors import LaunchError

#: Values of :attr:`LauncherKind.ssh_checked`: which nodes the reachability check asks.
EVERY, OTHERS, NONE = "every node", "nodes other than this host", "none"
#: Values of :attr:`LauncherKind.prefixed_by`: who puts ``host: `` before each output line.
BY_DS_LAUNCH, BY_PROGRAM = "ds_launch", "the program"


def _no_env(environ: Mapping[str, str]) -> Dict[str, str]:
    return {}


@dataclass(frozen=True)
class LauncherKind:
    """How one launcher kind starts and stops a job.

    * ``name``: the ``--launcher`` value (``local``: one node on this host, chosen, never asked for);
    * ``program``: the executable it needs on the launching node (``None``: local);
    * ``reach(host, remote, launcher_args) -> argv`` and ``reach_env(environ) -> variables``: per node,
      the command that runs the shell line ``remote`` on ``host``; ``every_rank(EveryRank) -> Command``:
      the one command that starts every rank (exactly one of the two, or neither for local);
    * ``ssh_options_from``: where the ssh options that reach the nodes come from (``--launcher_args``
      or a variable's name; used by the reachability check too, and refused when they close stdin);
    * ``ssh_checked``: which nodes the reachability check asks (:data:`EVERY`, :data:`OTHERS`,
      :data:`NONE`), unless ``remote_command_var`` names a variable set to something other than ssh;
    * ``stdin_stops_node``: the command's stdin is a pipe kept open, whose end stops the node;
      ``stop_waits_for_eof``: when stopping, that end alone is given time before SIGTERM;
    * ``prefixed_by``: who puts ``host: `` before each output line (:data:`BY_DS_LAUNCH`,
      :data:`BY_PROGRAM`: ds_launch strips it from the lines it keeps, or ``None``);
    * ``lost_connection_code``: the exit code that means the connection failed.

    Per-node kinds run the node guard, which writes each node's ``--save_pid`` file; for the others
    ds_launch writes the pid of its one command.
    """

    name: str
    program: Optional[str]
    reach: Optional[Callable[[str, str, Sequence[str]], List[str]]] = None
    reach_env: Callable[[Mapping[str, str]], Dict[str, str]] = _no_env
    every_rank: Optional[Callable[[EveryRank], Command]] = None
    ssh_options_from: Optional[str] = None
    ssh_checked: str = NONE
    remote_command_var: Optional[str] = None
    stdin_stops_node: bool = False
    stop_waits_for_eof: bool = False
    prefixed_by: Optional[str] = None
    lost_connection_code: Optional[int] = None

    @property
    def local(self) -> bool:
        """One node on this host: torchrun under the node guard, started directly."""
        return self.program is None

    @property
    def per_node(self) -> bool:
        """torchrun per node under the node guard (local, ssh, pdsh), not one command for every rank."""
        return self.every_rank is None

    @property
    def shown_as(self) -> str:
        """What the failure report calls the command ds_launch started."""
        return self.program or "torchrun (under the node guard)"

    def ssh_options(self, launcher_args: Sequence[str], environ: Mapping[str, str]) -> Tuple[List[str], Optional[str]]:
        """``(options, where)``: the ssh options that reach the nodes and where they come from
        (``([], None)`` for a kind that does not reach nodes over ssh itself)."""
        if self.ssh_options_from is None:
            return [], None
        if self.ssh_options_from == "--launcher_args":
            return list(launcher_args), self.ssh_options_from
        return environ.get(self.ssh_options_from, "").split(), self.ssh_options_from  # pdsh splits on spaces

    def checked_hosts(self, hosts: Sequence[str], environ: Mapping[str, str],
                      is_local: Callable[[str], bool]) -> List[str]:
        """The hosts among ``hosts`` that the reachability check asks (see :attr:`ssh_checked`)."""
        if self.remote_command_var and environ.get(self.remote_command_var, "ssh") != "ssh":
            return []
        if self.ssh_checked == EVERY:
            return list(hosts)
        if self.ssh_checked == OTHERS:
            return [host for host in hosts if not is_local(host)]
        return []


LOCAL = LauncherKind("local", None)
SSH = LauncherKind("ssh", "ssh", reach=commands.ssh_command, ssh_options_from="--launcher_args", ssh_checked=EVERY,
                   stdin_stops_node=True, stop_waits_for_eof=True, prefixed_by=BY_DS_LAUNCH, lost_connection_code=255)
PDSH = LauncherKind("pdsh", "pdsh", reach=commands.pdsh_command, reach_env=commands.pdsh_env,
                    ssh_options_from="PDSH_SSH_ARGS_APPEND", ssh_checked=EVERY, remote_command_var="PDSH_RCMD_TYPE",
                    stdin_stops_node=True, prefixed_by=BY_PROGRAM, lost_connection_code=255)
OPENMPI = LauncherKind("openmpi", "mpirun", every_rank=commands.openmpi_command, ssh_checked=OTHERS)
MPICH = LauncherKind("mpich", "mpirun", every_rank=commands.mpich_command, ssh_checked=OTHERS)
SLURM = LauncherKind("slurm", "srun", every_rank=commands.slurm_command)

#: Every kind by name; ``--launcher`` accepts all but ``local``, in this order.
KINDS: Dict[str, LauncherKind] = {kind.name: kind for kind in (SSH, PDSH, OPENMPI, MPICH, SLURM, LOCAL)}
LAUNCHERS = tuple(name for name, kind in KINDS.items() if not kind.local)


def get_kind(name: str) -> LauncherKind:
    """The description of the kind called ``name`` (one of :data:`KINDS`)."""
    return KINDS[name]


def choose_launcher(requested: Optional[str], hosts: Sequence[str], force_multi: bool,
                    is_local: Callable[[str], bool], which: Callable[[str], Optional[str]]) -> Tuple[str, str]:
    """``(launcher, reason)``: ``local`` for one node on this host (unless ``force_multi``), else
    ``requested``, else pdsh when installed, else ssh. A one-node job on another host runs there.

    ``requested`` must be one of :data:`LAUNCHERS` (any case), else :class:`LaunchError`.
    """
    if requested is not None and requested.lower() not in LAUNCHERS:
        raise LaunchError(f"--launcher {requested!r} is not one of {', '.join(LAUNCHERS)}")
    requested = requested.lower() if requested else None
    if len(hosts) == 1 and is_local(hosts[0]) and not force_multi:
        reason = "one node, on this host"
        if requested:
            reason += f" (--launcher {requested} is used with several nodes, a remote node or --force_multi)"
        return LOCAL.name, reason
    if requested:
        return requested, "--launcher"
    if which(PDSH.program):
        return PDSH.name, "pdsh is installed"
    return SSH.name, "pdsh is not installed"
