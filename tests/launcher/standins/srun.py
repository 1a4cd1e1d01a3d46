"""Stand-in ``srun`` for the launcher tests: every task of the step on this machine.

``srun [--nodes=N] [--ntasks-per-node=P] [--nodelist=H0,H1,...] [--kill-on-bad-exit[=0|1]]
[--OTHER=VALUE ...] COMMAND...`` starts N*P tasks, in srun's process group, each with the caller's
environment plus ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODEID``, ``SLURM_NTASKS``,
``SLURM_NNODES``, ``SLURM_JOB_NUM_NODES``, ``SLURM_NTASKS_PER_NODE``, ``SLURM_JOB_NODELIST``,
``SLURM_STEP_NODELIST`` and ``SLURMD_NODENAME`` (its node's name from the node list, else
``nodeK``). A task that exits non-zero gets srun's ``srun: error: NODE: task T: Exited with exit
code C``; with ``--kill-on-bad-exit=1`` the other tasks then get SIGTERM (SIGKILL after 5 s).
SIGTERM or SIGINT to srun does the same. Exit status: the first failed task's code, else 0.
"""
import os
import signal
import subprocess
import sys
import time


def main():
    argv, opts = sys.argv[1:], {}
    while argv and argv[0].startswith("--"):
        name, eq, value = argv.pop(0)[2:].partition("=")
        opts[name] = value if eq else "1"
    if not argv:
        sys.exit("usage: srun [options] command")
    nodes, per_node = int(opts.get("nodes", 1)), int(opts.get("ntasks-per-node", 1))
    names = opts["nodelist"].split(",") if "nodelist" in opts else [f"node{k}" for k in range(nodes)]
    kill_on_bad_exit = opts.get("kill-on-bad-exit", "0") == "1"
    tasks = []
    for task in range(nodes * per_node):
        node = task // per_node
        env = dict(os.environ, SLURM_PROCID=str(task), SLURM_LOCALID=str(task % per_node), SLURM_NODEID=str(node),
                   SLURM_NTASKS=str(nodes * per_node), SLURM_NNODES=str(nodes), SLURM_JOB_NUM_NODES=str(nodes),
                   SLURM_NTASKS_PER_NODE=str(per_node), SLURM_JOB_NODELIST=",".join(names),
                   SLURM_STEP_NODELIST=",".join(names), SLURMD_NODENAME=names[node])
        tasks.append(subprocess.Popen(argv, env=env))

    def stop(*_):
        for proc in tasks:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        while any(p.poll() is None for p in tasks) and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc in tasks:
            if proc.poll() is None:
                proc.kill()

    def on_signal(signum, frame):
        stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    first, reported = None, set()
    while len(reported) < len(tasks):
        for task, proc in enumerate(tasks):
            code = proc.poll()
            if code is None or task in reported:
                continue
            reported.add(task)
            if code != 0:
                shown = code if code > 0 else 128 - code
                print(f"srun: error: {names[task // per_node]}: task {task}: Exited with exit code {shown}",
                      file=sys.stderr, flush=True)
                if first is None:
                    first = shown
                    if kill_on_bad_exit:
                        stop()
        time.sleep(0.05)
    return first or 0


if __name__ == "__main__":
    sys.exit(main())
