"""``ds_launch`` / ``python -m accelops.launcher``: DeepSpeed's ``deepspeed`` command on torchrun.

``main()`` parses DeepSpeed's flags, plans the launch (:func:`accelops.launcher.plan.build_plan`),
and then either prints the plan (``--dry_run``) or runs it under
:func:`accelops.launcher.supervise.run_plan`: one node on this host runs its torchrun under the node
guard (:mod:`accelops.launcher.local`); several or remote nodes run ssh or pdsh per node, or one
mpirun / srun, supervised: one failing node stops them all.

Exit status: 0 when every rank exits 0; else the failed rank's code (128+N for a rank killed by
signal N; see ``supervise``); 128+N after signal N reached ``ds_launch``; 2 for bad input or an
unreachable host (one line on stderr naming what is wrong); 0 for a dry run.
"""
import argparse
import sys
from typing import Optional, Sequence

from .kinds import LAUNCHERS
from .ports import DEFAULT_MASTER_PORT


def parser() -> argparse.ArgumentParser:
    """The argument parser, with DeepSpeed's flag names, defaults and meanings."""
    p = argparse.ArgumentParser(
        prog="ds_launch", description="Launch a training script on one or more nodes: torchrun on each node, "
        "reached by ssh or pdsh, or every rank started by mpirun or srun (DeepSpeed's `deepspeed` flags).")
    p.add_argument("-H", "--hostfile", default=None,
                   help="hostfile of 'HOST slots=N' lines (default: /job/hostfile when it exists, else this host's "
                   "devices)")
    p.add_argument("-i", "--include", default="",
                   help="hosts/slots to use: HOST[:SLOT[,SLOT...]][@HOST...], e.g. 'worker-0@worker-1:0,2'")
    p.add_argument("-e", "--exclude", default="", help="hosts/slots not to use, same syntax as --include")
    p.add_argument("--num_nodes", type=int, default=None, help="use the first N hosts of the hostfile")
    p.add_argument("--num_gpus", "--num_accelerators", dest="num_gpus", type=int, default=None,
                   help="use slots 0..N-1 on each node (on a CPU host: start N ranks)")
    p.add_argument("--master_addr", default="", help="address of node 0 (default: 127.0.0.1 for one local node, "
                   "else the first host)")
    p.add_argument("--master_port", type=int, default=None,
                   help=f"rendezvous port on node 0 (default: {DEFAULT_MASTER_PORT}; when that is in use here, a "
                   "one-node job takes a free port and a multi-node job stops before starting)")
    p.add_argument("--launcher", default=None, metavar="{" + ",".join(LAUNCHERS) + "}",
                   help="how to reach the nodes (default: pdsh when installed, else ssh; one node on this host "
                   "runs locally unless --force_multi)")
    p.add_argument("--launcher_args", default="", help="arguments for the launcher (ssh, pdsh, mpirun, srun), "
                   "as one quoted string")
    p.add_argument("--module", action="store_true", help="run the script as a module (python -m)")
    p.add_argument("--no_python", action="store_true", help="run the script as a program, without python")
    p.add_argument("--no_local_rank", action="store_true", help="do not pass --local_rank=N to the script")
    p.add_argument("--no_ssh_check", action="store_true",
                   help="do not check that every node answers over ssh before starting")
    p.add_argument("--force_multi", action="store_true",
                   help="use the multi-node launcher even for one node on this host")
    p.add_argument("--save_pid", action="store_true",
                   help="write the torchrun pid to <tmp>/<ds_launch pid>.deepspeed while the job runs (on each "
                   "node for ssh/pdsh; the mpirun/srun pid here)")
    p.add_argument("--enable_each_rank_log", default=None, metavar="DIR",
                   help="write each rank's stdout/stderr to files under DIR")
    p.add_argument("--bind_cores_to_rank", action="store_true", help="give each rank its share of the cores")
    p.add_argument("--bind_core_list", default=None, help="cores to share out, e.g. 0,2-7 (default: all)")
    p.add_argument("--dry_run", action="store_true", help="print what would run on every node; start nothing")
    p.add_argument("user_script", help="the training script (or module with --module, program with --no_python)")
    p.add_argument("user_args", nargs=argparse.REMAINDER, help="arguments of the script, passed untouched")
    return p


def format_plan(plan) -> str:
    """The dry-run report: the job, then for every node its host, slots, devices and exact command."""
    lines = [f"launcher: {plan.launcher} ({plan.reason})",
             f"hostfile: {plan.hostfile or 'none (this host)'}",
             f"master: {plan.master_addr}:{plan.master_port}",
             f"world size: {plan.world_size} rank(s) on {len(plan.nodes)} node(s)",
             f"environment files: {', '.join(plan.env_files) or 'none'}"]
    if plan.exports:
        lines.append("exported to every rank: " + " ".join(sorted(plan.exports)))
    for note in plan.notes:
        lines.append(f"note: {note}")
    var = plan.visible_devices_var or "visible devices"
    for node in plan.nodes:
        lines.append("")
        lines.append(f"node {node.node_rank}: host {node.host}")
        lines.append(f"  slots: {','.join(map(str, node.slots))}")
        lines.append(f"  ranks: {node.ranks[0]}..{node.ranks[-1]}")
        devices = ",".join(node.devices) if plan.visible_devices_var else "not restricted (no variable)"
        lines.append(f"  {var}: {devices}")
        if node.remote is not None:
            lines.append(f"  remote command: {node.remote}")
        for command in plan.commands:
            if command.node == node.node_rank:
                lines.append(f"  command: {command.shell()}")
    for command in plan.commands:
        if command.node is None:
            lines += ["", f"command (every node): {command.shell()}"]
    return "\n".join(lines)


def _with_port(args: argparse.Namespace, port: int) -> argparse.Namespace:
    """``args`` with ``--master_port PORT``."""
    return argparse.Namespace(**{**vars(args), "master_port": port})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``ds_launch``; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        from .plan import build_plan
        plan = build_plan(args)
    except ValueError as exc:  # LaunchError, or the accelerator's (e.g. an unknown DS_ACCELERATOR)
        print(f"ds_launch: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(format_plan(plan))
        return 0
    from .ports import settle_master_port
    from .supervise import run_plan
    try:
        plan = settle_master_port(plan, args.master_port, lambda port: build_plan(_with_port(args, port)))
        supervisor = None
        if plan.kind.local:
            from .local import LocalSupervisor as supervisor
        return run_plan(plan, ssh_check=not args.no_ssh_check, save_pid=args.save_pid, supervisor=supervisor)
    except ValueError as exc:  # LaunchError: the launcher is missing or a host is unreachable
        print(f"ds_launch: error: {exc}", file=sys.stderr)
        return 2
