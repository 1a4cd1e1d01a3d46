"""Start one group of ranks of a benchmark worker and collect each rank's JSON result (shared by benchmarks),
and the two small helpers the workers use: ``proc_status_gib`` (a /proc/self/status memory line in GiB) and
``free_port``.

``launch_ranks(cmd, ranks, out, timeout)`` starts ``ranks`` processes of ``cmd`` (a list: interpreter, script,
arguments) with MASTER_ADDR / MASTER_PORT (a free port) / RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE,
``DS_ACCELERATOR=cpu``, ``OMP_NUM_THREADS=1`` and ``PYTHONWARNINGS=ignore`` in the environment (``env`` adds to or
overrides them), each writing its
stdout and stderr to ``<out>.<rank>.log``. The worker writes its result as JSON to ``<out>.<rank>``. Returns
the list of the ranks' results, or ``{"error": ...}`` with the tail of the first failed rank's log (a rank
that exits non-zero, or every rank killed when one passes ``timeout`` seconds).
"""
import json
import os
import socket
import subprocess

GIB = 1024 ** 3


def proc_status_gib(key: str) -> float:
    """The value of ``key`` (VmHWM, VmRSS, ...) in this process's /proc/self/status, in GiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / GIB
    raise KeyError(key)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(cmd, ranks: int, out: str, timeout: float, env: dict = None):
    port = free_port()
    procs = []
    for rank in range(ranks):
        rank_env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                        WORLD_SIZE=str(ranks), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(ranks),
                        DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        rank_env.update(env or {})  # the caller's values win (e.g. OMP_NUM_THREADS)
        log = open(out + f".{rank}.log", "w")
        procs.append((subprocess.Popen(cmd, env=rank_env, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for rank, (p, log) in enumerate(procs):
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q, _ in procs:
                q.kill()
                q.wait()
            rc = "timeout"
        log.close()
        if rc != 0:
            failed.append(rank)
    if failed:
        with open(out + f".{failed[0]}.log") as f:
            tail = "".join(f.readlines()[-15:])
        return {"error": f"rank(s) {failed} failed; log {out}.{failed[0]}.log:\n{tail}"}
    results = []
    for rank in range(ranks):
        with open(out + f".{rank}") as f:
            results.append(json.load(f))
    return results
