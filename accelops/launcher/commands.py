"""The exact commands: torchrun for each node, wrapped for ssh or pdsh; or one mpirun / srun line.

Every function here is pure: it builds argument lists and strings and runs nothing.

* Per node (local, ssh, pdsh): ``python -u -m torch.distributed.run --nnodes=N --node_rank=R
  --nproc_per_node=P --master_addr=A --master_port=PORT <script> [--local_rank=${local_rank}] <args>``.
  torchrun's agent replaces ``${local_rank}`` in every argument with each rank's local rank (and
  turns ``$$`` into ``$``), so the user's script and arguments are passed with each ``$`` doubled
  and arrive untouched.
* The local node runs it under the node guard too (:mod:`accelops.launcher.guard` with
  ``--parent=<ds_launch pid>``: the node stops when ``ds_launch`` ends, even by SIGKILL).
* ssh/pdsh run that command through the remote login shell (a POSIX shell: sh, bash, zsh), under
  the node guard (:mod:`accelops.launcher.guard`, which stops the node when the connection closes):
  ``cd <cwd> && export ... && exec python -u -m accelops.launcher.guard --node=HOST -- <torchrun ...>``,
  every word quoted with :func:`shlex.quote`.
  pdsh also replaces ``%h``/``%u``/``%n`` in the command (and ``%%`` with ``%``), so each ``%`` is
  doubled for pdsh. One pdsh per node (``-w HOST``): each node's command differs.
* openmpi/mpich/slurm start every rank themselves (as DeepSpeed does), one process per slot;
  ``init_distributed`` reads their rank variables. The per-rank helper
  ``python -m accelops.launcher.rank`` adds ``--local_rank=N`` and core binding where asked.
  ``srun`` gets ``--kill-on-bad-exit=1`` so that one failing rank ends the job, as mpirun does.
"""
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .environment import export_command
from .errors import LaunchError

#: DeepSpeed's pdsh fan-out.
PDSH_MAX_FAN_OUT = 1024


@dataclass
class UserCommand:
    """What each rank runs and how: the parts of the command line the user chose."""

    script: str
    args: List[str] = field(default_factory=list)
    module: bool = False
    no_python: bool = False
    no_local_rank: bool = False
    bind_cores_to_rank: bool = False
    bind_core_list: Optional[str] = None
    each_rank_log: Optional[str] = None
    python: str = sys.executable


@dataclass
class Command:
    """One process the launcher starts on the launching node.

    ``argv`` is run with the launcher's environment plus ``env``; ``node`` is the node rank it
    serves, or ``None`` for a launcher that serves every node (mpirun, srun).
    """

    argv: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    node: Optional[int] = None

    def shell(self) -> str:
        """The command as one line a POSIX shell runs identically (``NAME=value ... argv``)."""
        assigns = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join(assigns + [shlex.join(self.argv)])


def _escape_dollars(words: Sequence[str]) -> List[str]:
    """Protect words from torchrun's ``${local_rank}`` substitution (``$`` -> ``$$``)."""
    return [w.replace("$", "$$") for w in words]


def rank_helper(user: UserCommand, python: Optional[str] = None) -> List[str]:
    """``python -u -m accelops.launcher.rank [options] -- script args``: the per-rank helper."""
    opts = []
    if user.module:
        opts.append("--module")
    if user.no_python:
        opts.append("--no_python")
    if user.no_local_rank:
        opts.append("--no_local_rank")
    if user.bind_cores_to_rank:
        opts.append("--bind_cores_to_rank")
        if user.bind_core_list:
            opts.append(f"--bind_core_list={user.bind_core_list}")
    return [python or user.python, "-u", "-m", "accelops.launcher.rank", *opts, "--", user.script, *user.args]


def direct_rank_command(user: UserCommand) -> List[str]:
    """What an MPI or SLURM launcher starts for each rank."""
    if not user.no_local_rank or user.bind_cores_to_rank:
        return rank_helper(user)
    if user.no_python:
        return [user.script, *user.args]
    return [user.python, "-u", *(["-m"] if user.module else []), user.script, *user.args]


def torchrun_command(user: UserCommand, nnodes: int, node_rank: int, nproc: int, master_addr: str,
                     master_port: int) -> List[str]:
    """The torchrun command of one node (see the module docstring)."""
    argv = [user.python, "-u", "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--node_rank={node_rank}",
            f"--nproc_per_node={nproc}", f"--master_addr={master_addr}", f"--master_port={master_port}"]
    if user.each_rank_log:
        argv += [f"--log_dir={user.each_rank_log}", "--redirects=3"]
    if user.bind_cores_to_rank:
        # torchrun runs `python -u -m accelops.launcher.rank ...`; the helper adds --local_rank itself.
        helper = rank_helper(user)
        return argv + ["--module", helper[3], *_escape_dollars(helper[4:])]
    local_rank = [] if user.no_local_rank else ["--local_rank=${local_rank}"]
    if user.no_python:
        return argv + ["--no_python", user.script, *local_rank, *_escape_dollars(user.args)]
    if user.module:
        argv.append("--module")
    return argv + [*_escape_dollars([user.script]), *local_rank, *_escape_dollars(user.args)]


def guard_command(python: str, host: str, save_pid: Optional[int] = None, parent: Optional[int] = None) -> List[str]:
    """``python -u -m accelops.launcher.guard --node=HOST [--save_pid=PID] [--parent=PID] --``: the
    node guard that runs a node's torchrun (the node's command follows the ``--``). ``parent``: the
    pid of the ``ds_launch`` that starts the guard itself (the local node); the guard stops the node
    when that process ends. Without it (ssh, pdsh) the guard stops at the end of its stdin."""
    return [python, "-u", "-m", "accelops.launcher.guard", f"--node={host}",
            *([f"--save_pid={save_pid}"] if save_pid else []), *([f"--parent={parent}"] if parent else []), "--"]


#: ssh options that take a value (the next letters, or the next word).
_SSH_VALUE_OPTIONS = set("BbcDEeFIiJLlmOoPpQRSWw")


def check_ssh_args(words: Sequence[str], where: str) -> None:
    """Refuse ssh's ``-n`` (and ``-f``) in ``words``: they close the remote command's stdin (or
    detach it), which the node guard takes as the end of the connection, so the job would stop at
    once (or be left behind). ``where`` names the source in the :class:`LaunchError`."""
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
            continue
        if not word.startswith("-") or word in ("-", "--") or word.startswith("--"):
            continue
        for index, letter in enumerate(word[1:], start=1):
            if letter in "nf":
                raise LaunchError(f"{where}: ssh option -{letter} in {word!r} would close or detach the remote "
                                  "command's input, which ds_launch keeps open to stop the node when the "
                                  "launcher ends; leave it out")
            if letter in _SSH_VALUE_OPTIONS:
                skip_next = index == len(word) - 1
                break


def remote_shell_command(cwd: str, env: Mapping[str, str], argv: Sequence[str]) -> str:
    """``cd CWD && export K=V ... && exec ARGV`` for a POSIX remote shell, every word quoted."""
    parts = [f"cd {shlex.quote(cwd)}"]
    exports = export_command(env)
    if exports:
        parts.append(exports)
    parts.append("exec " + shlex.join(argv))
    return " && ".join(parts)


def ssh_command(host: str, remote: str, launcher_args: Sequence[str]) -> List[str]:
    """``ssh [launcher_args] HOST REMOTE``; ssh hands REMOTE to the remote login shell as is."""
    return ["ssh", *launcher_args, host, remote]


def pdsh_command(host: str, remote: str, launcher_args: Sequence[str]) -> List[str]:
    """``pdsh -S -f 1024 -w HOST [launcher_args] REMOTE`` with each ``%`` of REMOTE doubled."""
    return ["pdsh", "-S", "-f", str(PDSH_MAX_FAN_OUT), "-w", host, *launcher_args, remote.replace("%", "%%")]


def pdsh_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """Variables pdsh needs: ssh as its remote command unless the user chose another
    (``PDSH_RCMD_TYPE``); the user's ``PDSH_SSH_ARGS_APPEND`` is inherited untouched."""
    return {} if environ.get("PDSH_RCMD_TYPE") else {"PDSH_RCMD_TYPE": "ssh"}


@dataclass(frozen=True)
class EveryRank:
    """What a launcher that starts every rank itself (mpirun, srun) is given: the ``launcher``'s name
    (for messages), ``nodes`` as ``(host, slots)``, the variables every rank gets (``exports``), the
    command of each rank (``rank_argv``), ``--launcher_args``, the launcher's environment, the
    ``--enable_each_rank_log`` folder and whether the hosts are named (``nodelist``: from a hostfile)."""

    launcher: str
    nodes: Sequence[Tuple[str, int]]
    exports: Mapping[str, str]
    rank_argv: Sequence[str]
    launcher_args: Sequence[str] = ()
    environ: Mapping[str, str] = field(default_factory=dict)
    log_dir: Optional[str] = None
    nodelist: bool = False

    def per_node(self) -> int:
        """The slots of every node, which must be the same (else :class:`LaunchError`)."""
        counts = {n for _, n in self.nodes}
        if len(counts) != 1:
            listing = ", ".join(f"{h}: {n}" for h, n in self.nodes)
            raise LaunchError(f"--launcher {self.launcher} needs the same number of slots on every node, got "
                              f"{listing}; use --num_gpus, --include, or --launcher pdsh/ssh")
        return next(iter(counts))


def openmpi_command(job: EveryRank) -> Command:
    """``mpirun`` (Open MPI): one process per slot, ``-H host:slots,...``, variables by ``-x``, each
    rank's output under the log folder by ``--output-filename``."""
    total = sum(n for _, n in job.nodes)
    argv = ["mpirun", "--allow-run-as-root", "-np", str(total), "-H", ",".join(f"{h}:{n}" for h, n in job.nodes),
            "--bind-to", "none"]
    for name in ("PATH", "LD_LIBRARY_PATH"):
        if name in job.environ and name not in job.exports:
            argv += ["-x", name]
    for key, value in job.exports.items():
        argv += ["-x", f"{key}={value}"]
    log = ["--output-filename", job.log_dir] if job.log_dir else []
    return Command(argv + log + list(job.launcher_args) + list(job.rank_argv))


def mpich_command(job: EveryRank) -> Command:
    """``mpirun`` (MPICH/Hydra): ``-n total -ppn per_node -hosts h0,h1``, variables by ``-genv``, each
    rank's output in ``<log>/rank_<r>.log``."""
    per_node = job.per_node()
    argv = ["mpirun", "-n", str(per_node * len(job.nodes)), "-ppn", str(per_node), "-hosts",
            ",".join(h for h, _ in job.nodes)]
    for key, value in job.exports.items():
        argv += ["-genv", key, value]
    log = []
    if job.log_dir:
        pattern = os.path.join(job.log_dir, "rank_%r.log")
        log = ["-outfile-pattern", pattern, "-errfile-pattern", pattern]
    return Command(argv + log + list(job.launcher_args) + list(job.rank_argv))


def slurm_command(job: EveryRank) -> Command:
    """``srun --nodes N --ntasks-per-node P --kill-on-bad-exit=1 [--nodelist h0,h1]``; srun passes the
    launcher's whole environment on (its default ``--export=ALL``), so variables travel in
    :attr:`Command.env`. Each rank's output goes to ``<log>/rank_<t>.log``."""
    per_node = job.per_node()
    argv = ["srun", f"--nodes={len(job.nodes)}", f"--ntasks-per-node={per_node}", "--kill-on-bad-exit=1"]
    if job.nodelist:
        argv.append("--nodelist=" + ",".join(h for h, _ in job.nodes))
    if job.log_dir:
        argv.append(f"--output={os.path.join(job.log_dir, 'rank_%t.log')}")
    return Command(argv + list(job.launcher_args) + list(job.rank_argv), dict(job.exports))


def split_launcher_args(text: str) -> List[str]:
    """``--launcher_args`` split as a POSIX shell would; a bad quote is a :class:`LaunchError`."""
    try:
        return shlex.split(text or "")
    except ValueError as exc:
        raise LaunchError(f"--launcher_args {text!r}: {exc}") from None


def cwd_pythonpath(environ: Mapping[str, str], cwd: str) -> str:
    """``PYTHONPATH`` for remote ranks: the working folder first (as DeepSpeed does), then the user's."""
    old = environ.get("PYTHONPATH", "")
    return cwd + (os.pathsep + old if old else "")
