"""From the command line's choices to a :class:`LaunchPlan`: nodes, slots, devices, environment and
the exact commands. Nothing is started here; :func:`build_plan` only reads files and the
environment (and asks the accelerator for its device count and variable names).
"""
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from . import commands
from .commands import Command, EveryRank, UserCommand
from .environment import (EXPORT_PREFIXES, env_files, forwarded_env, launching_devices, read_env_files,
                          slot_devices)
from .errors import LaunchError
from .hostfile import DEFAULT_HOSTFILE, is_local_host, local_pool, read_hostfile
from .kinds import LauncherKind, choose_launcher, get_kind
from .ports import DEFAULT_MASTER_PORT
from .resources import select


@dataclass
class NodePlan:
    """One node of the job: ``host``, its ``node_rank``, the ``slots`` it uses, the ``devices``
    those slots map to, the variables set for it alone (``env``), its ``ranks`` (global rank numbers)
    and, for ssh/pdsh, the ``remote`` shell command run there."""

    host: str
    node_rank: int
    slots: List[int]
    devices: List[str]
    ranks: List[int]
    env: Dict[str, str] = field(default_factory=dict)
    remote: Optional[str] = None


@dataclass
class LaunchPlan:
    """Everything ``ds_launch`` would do: ``commands`` are started on the launching node, each with
    the launcher's environment plus its own ``env``. ``launcher_args`` are ``--launcher_args``,
    split; ``ssh_args`` the ssh options that reach the nodes (``--launcher_args`` for ssh, the
    user's ``PDSH_SSH_ARGS_APPEND`` for pdsh), used by the reachability check too."""

    launcher: str
    reason: str
    hostfile: Optional[str]
    nodes: List[NodePlan]
    master_addr: str
    master_port: int
    exports: Dict[str, str]
    env_files: List[str]
    visible_devices_var: Optional[str]
    commands: List[Command]
    notes: List[str] = field(default_factory=list)
    launcher_args: List[str] = field(default_factory=list)
    ssh_args: List[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return sum(len(n.slots) for n in self.nodes)

    @property
    def kind(self) -> LauncherKind:
        """The description of :attr:`launcher` (:mod:`accelops.launcher.kinds`)."""
        return get_kind(self.launcher)


def _accelerator():
    from ..accelerator import get_accelerator
    return get_accelerator()


def check_user_script(user: UserCommand, cwd: str, which: Callable[[str], Optional[str]]) -> None:
    """A script that does not exist is a :class:`LaunchError` (a module is not checked: it may
    come from the remote nodes' ``PYTHONPATH``); with ``--no_python`` a command on ``PATH`` counts."""
    if user.module and user.no_python:
        raise LaunchError("--module and --no_python exclude each other")
    if user.module:
        return
    path = os.path.join(cwd, user.script)
    if os.path.isfile(path):
        return
    if user.no_python and os.sep not in user.script and which(user.script):
        return
    what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
    raise LaunchError(f"user script {user.script!r} {what} (looked in {cwd})")


def build_plan(args: Any, environ: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
               home: Optional[str] = None, accelerator: Any = None,
               which: Callable[[str], Optional[str]] = shutil.which,
               is_local: Callable[[str], bool] = is_local_host) -> LaunchPlan:
    """Plan the launch described by ``args`` (the CLI's namespace, see ``cli.parser()``).

    ``environ``, ``cwd``, ``home``, ``accelerator``, ``which`` and ``is_local`` default to the real
    ones and are replaced in tests. Raises :class:`LaunchError` for every bad input (see the
    hostfile, resources and environment modules, and :func:`check_user_script`).
    """
    environ = dict(os.environ if environ is None else environ)
    cwd = os.path.abspath(cwd or os.getcwd())
    home = home or os.path.expanduser("~")
    accel = accelerator if accelerator is not None else _accelerator()
    user = UserCommand(script=args.user_script, args=list(args.user_args), module=args.module,
                       no_python=args.no_python, no_local_rank=args.no_local_rank,
                       bind_cores_to_rank=args.bind_cores_to_rank, bind_core_list=args.bind_core_list,
                       each_rank_log=args.enable_each_rank_log)
    check_user_script(user, cwd, which)
    launcher_args = commands.split_launcher_args(args.launcher_args)
    master_port = DEFAULT_MASTER_PORT if args.master_port is None else args.master_port
    if not 0 < master_port < 65536:
        raise LaunchError(f"--master_port must be in 1..65535, got {master_port}")

    names = list(accel.visible_devices_envs())
    launching = launching_devices(environ, names + ["CUDA_VISIBLE_DEVICES"]) if names else None
    explicit = os.path.join(cwd, args.hostfile) if args.hostfile is not None else None
    pool = read_hostfile(explicit)
    hostfile = None if pool is None else explicit or DEFAULT_HOSTFILE
    notes = []
    if pool is None:
        count = len(launching[1]) if launching else int(accel.device_count())
        pool = local_pool(count, f"accelerator {accel.name!r} counts {count} device(s) and {DEFAULT_HOSTFILE} "
                                 "does not exist; give a hostfile with -H")
    elif not names:
        notes.append(f"accelerator {accel.name!r} has no visible-devices variable, so slots do not pick devices "
                     "on the nodes; on a login node without devices set DS_ACCELERATOR (e.g. cuda)")
    selection = select(pool, args.include, args.exclude, args.num_nodes, args.num_gpus,
                       allow_oversubscribe=hostfile is None and not names)
    if launching:
        notes.append(f"{launching[0]}={','.join(launching[1])} on this node: slot k is its k-th device")

    hosts = list(selection)
    launcher, reason = choose_launcher(args.launcher, hosts, args.force_multi, is_local, which)
    kind = get_kind(launcher)
    remote = not kind.local
    if args.master_addr:
        master_addr = args.master_addr
    elif not remote:
        master_addr = "127.0.0.1"
    elif is_local(hosts[0]):
        import socket
        master_addr = socket.gethostname()
    else:
        master_addr = hosts[0]

    skip = set(names) | {"CUDA_VISIBLE_DEVICES"}
    exports = forwarded_env(environ, EXPORT_PREFIXES + tuple(accel.export_envs()), skip) if remote else {}
    if remote:
        exports["PYTHONPATH"] = commands.cwd_pythonpath(environ, cwd)
    files = env_files(environ, cwd, home)
    exports.update(read_env_files(files))

    nodes, rank = [], 0
    for node_rank, (host, slots) in enumerate(selection.items()):
        devices = slot_devices(host, slots, launching)
        env: Dict[str, str] = OrderedDict()
        for name in names:
            env[name] = ",".join(devices)
        env.update(LOCAL_SIZE=str(len(slots)), CROSS_RANK=str(node_rank), CROSS_SIZE=str(len(selection)))
        nodes.append(NodePlan(host, node_rank, list(slots), devices, list(range(rank, rank + len(slots))), env))
        rank += len(slots)

    plan = LaunchPlan(launcher, reason, hostfile, nodes, master_addr, master_port, exports, files,
                      names[0] if names else None, [], notes, launcher_args)
    plan.ssh_args, where = kind.ssh_options(launcher_args, environ)
    if where:
        commands.check_ssh_args(plan.ssh_args, where)
    if kind.per_node:
        save_pid = os.getpid() if getattr(args, "save_pid", False) else None
        _per_node_commands(plan, user, environ, cwd, launcher_args, save_pid)
    else:
        _every_rank_command(plan, user, environ, launcher_args, names)
    if kind.program and not which(kind.program):
        plan.notes.append(f"{kind.program!r} (launcher {launcher}) is not on PATH here")
    return plan


def _per_node_commands(plan: LaunchPlan, user: UserCommand, environ: Mapping[str, str], cwd: str,
                       launcher_args: List[str], save_pid: Optional[int]) -> None:
    """torchrun per node, under the node guard (``save_pid``: the launcher's pid, for the guard's
    ``--save_pid`` file on each node); the local node's guard watches this process (``--parent``), a
    remote node's is reached by the kind's ``reach`` command."""
    kind = plan.kind
    for node in plan.nodes:
        argv = commands.torchrun_command(user, len(plan.nodes), node.node_rank, len(node.slots), plan.master_addr,
                                         plan.master_port)
        parent = os.getpid() if kind.local else None
        argv = commands.guard_command(user.python, node.host, save_pid, parent) + argv
        if kind.local:
            plan.commands.append(Command(argv, {**plan.exports, **node.env}, node.node_rank))
            continue
        node.remote = commands.remote_shell_command(cwd, {**plan.exports, **node.env}, argv)
        plan.commands.append(Command(kind.reach(node.host, node.remote, launcher_args), kind.reach_env(environ),
                                     node.node_rank))


def _every_rank_command(plan: LaunchPlan, user: UserCommand, environ: Mapping[str, str], launcher_args: List[str],
                        names: List[str]) -> None:
    """The one command (mpirun, srun) that starts every rank, with the same devices on every node."""
    launcher = plan.launcher
    device_lists = {tuple(n.devices) for n in plan.nodes}
    exports = dict(plan.exports)
    if names and len(device_lists) > 1:
        listing = "; ".join(f"{n.host}: {','.join(n.devices)}" for n in plan.nodes)
        raise LaunchError(f"--launcher {launcher} gives every node the same devices, but the slots differ "
                          f"({listing}); use --launcher pdsh or ssh for per-node slots")
    if names:
        for name in names:
            exports[name] = ",".join(plan.nodes[0].devices)
    exports.update(MASTER_ADDR=plan.master_addr, MASTER_PORT=str(plan.master_port))
    hosts = [(n.host, len(n.slots)) for n in plan.nodes]
    job = EveryRank(launcher, hosts, exports, commands.direct_rank_command(user), launcher_args, environ,
                    user.each_rank_log, nodelist=plan.hostfile is not None)
    plan.commands.append(plan.kind.every_rank(job))
