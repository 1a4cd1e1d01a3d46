"""Worker processes for the comm tests, and the launcher that runs them with a hard timeout.

Run as ``python comm_workers.py SCENARIO``; rank and rendezvous come from the environment, like
under torchrun. Each worker prints one JSON line of results that the tests check.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INIT_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(world_size, scenario, env_for_rank, timeout_s=90):
    """Start ``world_size`` workers (``env_for_rank(rank) -> dict`` of extra variables), wait at most
    ``timeout_s`` for all of them, kill every one still running on expiry. Returns a list of
    (returncode, stdout, stderr); a killed worker has returncode None."""
    procs = []
    for rank in range(world_size):
        env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
        env["DS_ACCELERATOR"] = "cpu"  # gloo on CPU tensors, also on a GPU host
        env.update({k: str(v) for k, v in env_for_rank(rank).items()})
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "comm_workers.py"), scenario], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    deadline = time.monotonic() + timeout_s
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results.append((proc.returncode, out, err))
        except subprocess.TimeoutExpired:
            results.append((None, "", f"killed after {timeout_s} s"))
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return results


def run_launcher(cmd, env, result_dir, timeout_s=120):
    """Run a launcher command (mpirun, torchrun) that starts ``launched_allreduce`` workers writing
    ``result_dir/result-<rank>.json``; kill its whole process group after ``timeout_s``. Returns the
    results in rank order; AssertionError when it fails or times out."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{cmd[0]} did not finish within {timeout_s} s") from None
    assert proc.returncode == 0, err[-3000:]
    files = sorted(result_dir.glob("result-*.json"))  # per-rank files: launchers may interleave stdout
    assert [f.name for f in files] == [f"result-{r}.json" for r in range(len(files))] and files, out
    return [json.loads(f.read_text()) for f in files]


def torchrun_env(rank, world_size, port, **extra):
    env = {"RANK": rank, "WORLD_SIZE": world_size, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": world_size,
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    env.update(extra)
    return env


def parse(results):
    """The JSON lines of successful workers, in rank order; AssertionError with stderr otherwise."""
    out = []
    for rank, (code, stdout, stderr) in enumerate(results):
        assert code == 0, f"rank {rank} exited with {code}:\n{stderr[-3000:]}"
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


_LAUNCH_VARS = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "PMI_LOCAL_RANK",
                "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST", "SLURM_NODELIST",
                "SLURM_JOB_ID", "LOCAL_SIZE"}


# ---------------------------------------------------------------------------------------------- workers
def _collectives(dist, torch, rank, n, marker_dir):
    res = {}
    t = torch.tensor([rank + 1.0, 10.0 * rank])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    res["all_reduce_sum"] = t.tolist()
    t = torch.tensor([float(rank), -float(rank)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    res["all_reduce_max"] = t.tolist()
    t = torch.full((3,), float(rank))
    dist.broadcast(t, src=n - 1)
    res["broadcast"] = t.tolist()
    gathered = [torch.zeros(2) for _ in range(n)]
    dist.all_gather(gathered, torch.tensor([float(rank), rank * 2.0]))
    res["all_gather"] = [g.tolist() for g in gathered]
    out = torch.zeros(2)
    dist.reduce_scatter(out, [torch.full((2,), float(rank * 100 + dst)) for dst in range(n)])
    res["reduce_scatter"] = out.tolist()
    single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    out = torch.zeros(1)
    single(out, torch.arange(n, dtype=torch.float32) + rank)
    res["reduce_scatter_tensor"] = out.tolist()
    # send/recv around the ring; even ranks send first so blocking calls cannot deadlock.
    nxt, prv = (rank + 1) % n, (rank - 1) % n
    got = torch.zeros(1)
    if rank % 2 == 0:
        dist.send(torch.tensor([float(rank)]), dst=nxt)
        dist.recv(got, src=prv)
    else:
        dist.recv(got, src=prv)
        dist.send(torch.tensor([float(rank)]), dst=nxt)
    res["send_recv"] = got.item()
    got = torch.zeros(1)
    reqs = [dist.isend(torch.tensor([rank * 7.0]), dst=nxt), dist.irecv(got, src=prv)]
    for req in reqs:
        req.wait()
    res["isend_irecv"] = got.item()
    # barrier: rank 0 writes a marker late; nobody may pass the barrier before it exists.
    marker = os.path.join(marker_dir, "rank0_was_here")
    if rank == 0:
        time.sleep(0.5)
        with open(marker, "w") as fh:
            fh.write("x")
    dist.barrier()
    res["marker_after_barrier"] = os.path.exists(marker)
    dist.barrier()
    if rank == 0:
        os.remove(marker)
    return res


def _sum(dist, torch, rank):
    from accelops.accelerator import get_accelerator

    t = torch.tensor([rank + 1.0], device=get_accelerator().current_device_name())
    dist.all_reduce(t)
    return t.item()


def worker_collectives():
    import dataclasses

    import torch
    import torch.distributed as dist
    from accelops import comm

    info = comm.init_distributed(timeout=INIT_TIMEOUT_S)
    again = comm.init_distributed()
    res = {"info": dataclasses.asdict(info), "again_same": again == info,
           "helpers": [comm.get_rank(), comm.get_world_size(), comm.get_local_rank(), comm.is_initialized()]}
    res.update(_collectives(dist, torch, info.rank, info.world_size, os.environ["COMM_TEST_DIR"]))
    comm.destroy()
    res["after_destroy"] = [comm.is_initialized(), comm.get_world_size()]
    # The same processes again through tcp:// and file://.
    tcp = f"tcp://127.0.0.1:{os.environ['COMM_TEST_TCP_PORT']}"
    info = comm.init_distributed(init_method=tcp, timeout=INIT_TIMEOUT_S)
    res["tcp"] = [info.init_method, _sum(dist, torch, info.rank)]
    comm.destroy()
    path = os.path.join(os.environ["COMM_TEST_DIR"], "filestore")
    info = comm.init_distributed(init_method="file://" + path, timeout=INIT_TIMEOUT_S)
    res["file"] = [info.init_method, _sum(dist, torch, info.rank)]
    comm.destroy()
    return res


def worker_launched_allreduce():
    import dataclasses

    import torch
    import torch.distributed as dist
    from accelops import comm

    info = comm.init_distributed(timeout=INIT_TIMEOUT_S)
    res = {"info": dataclasses.asdict(info), "sum": _sum(dist, torch, info.rank),
           "exported": {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                        "MASTER_PORT")}}
    comm.destroy()
    return res


if __name__ == "__main__":
    result = {"collectives": worker_collectives, "launched_allreduce": worker_launched_allreduce}[sys.argv[1]]()
    line = json.dumps(result)
    os.write(1, (line + "\n").encode())  # one write: mpirun relays ranks' output chunk by chunk
    if os.environ.get("COMM_TEST_DIR"):
        with open(os.path.join(os.environ["COMM_TEST_DIR"], f"result-{result['info']['rank']}.json"), "w") as fh:
            fh.write(line)
