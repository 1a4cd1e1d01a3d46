"""Worker processes for the comm tests, and the launcher that runs them with a hard timeout.

Run as ``python comm_workers.py SCENARIO``; rank and rendezvous come from the environment, like
under torchrun. Each worker prints one JSON line of results that the tests check.
"""
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INIT_TIMEOUT_S = 30


def run_ranks(world_size, scenario, env_for_rank, timeout_s=90):
    """Start ``world_size`` workers (``env_for_rank(rank) -> dict`` of extra variables), wait at most
    ``timeout_s`` for all of them, kill every one still running on expiry. Returns a list of
    (returncode, stdout, stderr); a killed worker has returncode None."""
    from helpers import launch_free_environ, run_all  # the tests' side: a worker has no tests/ on sys.path

    argv = [sys.executable, os.path.join(HERE, "comm_workers.py"), scenario]
    # gloo on CPU tensors, also on a GPU host
    envs = [launch_free_environ(DS_ACCELERATOR="cpu", **{k: str(v) for k, v in env_for_rank(rank).items()})
            for rank in range(world_size)]
    return run_all([(argv, env) for env in envs], timeout_s)


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


def _deepspeed_calls(dist, torch, rank, n, marker_dir):
    """DeepSpeed call shapes on ``dist`` (accelops.comm imported as deepspeed.comm would be)."""
    import warnings
    from datetime import timedelta

    res = {}
    t = torch.tensor([rank + 1.0, -float(rank)])
    dist.all_reduce(t)  # default op: ReduceOp.SUM
    res["all_reduce"] = t.tolist()
    t = torch.tensor([float(rank)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, prof=True, log_name="max_of_ranks", debug="caller")
    res["all_reduce_ds_max"] = t.item()
    t = torch.tensor([rank + 5.0])
    work = dist.all_reduce(t, torch.distributed.ReduceOp.MIN, None, True)  # positional, torch's op, async
    work.wait()
    res["all_reduce_torch_min_async"] = t.item()
    try:
        dist.all_reduce(torch.ones(1), op="sum")
    except ValueError as exc:
        res["bad_op"] = str(exc)
    t = torch.full((2,), float(rank))
    dist.broadcast(t, n - 1)
    res["broadcast"] = t.tolist()
    t = torch.full((2,), rank + 3.0)
    dist.broadcast(t, src=0, async_op=True).wait()
    res["broadcast_async"] = t.tolist()
    gathered = [torch.zeros(2) for _ in range(n)]
    dist.all_gather(gathered, torch.tensor([float(rank), 10.0 + rank]))
    res["all_gather"] = [g.tolist() for g in gathered]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.zeros(2 * n)
        dist.all_gather_into_tensor(out, torch.tensor([float(rank), 10.0 + rank]))
        res["all_gather_into_tensor"] = out.tolist()
        out = torch.zeros(1)
        dist.reduce_scatter_tensor(out, torch.arange(n, dtype=torch.float32) + 100.0 * rank)
        res["reduce_scatter_tensor"] = out.tolist()
    res["deprecation_warnings"] = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    # Uneven splits: rank r sends r + d + 1 copies of 100 r + d to rank d.
    in_splits = [rank + d + 1 for d in range(n)]
    out_splits = [s + rank + 1 for s in range(n)]
    source = torch.cat([torch.full((k,), 100.0 * rank + d) for d, k in enumerate(in_splits)])
    out = torch.zeros(sum(out_splits))
    dist.all_to_all_single(out, source, output_split_sizes=out_splits, input_split_sizes=in_splits)
    res["all_to_all_single_uneven"] = out.tolist()
    out = torch.zeros(n)
    dist.all_to_all_single(out, torch.arange(n, dtype=torch.float32) + 10.0 * rank)
    res["all_to_all_single_even"] = out.tolist()
    outs = [torch.zeros(1) for _ in range(n)]
    dist.all_to_all(outs, [torch.tensor([100.0 * rank + d]) for d in range(n)])
    res["all_to_all"] = [o.item() for o in outs]
    t = torch.tensor([rank + 1.0])
    dist.reduce(t, 0)
    res["reduce_on_0"] = t.item() if rank == 0 else None
    out = torch.zeros(1)
    dist.reduce_scatter(out, [torch.tensor([100.0 * rank + d]) for d in range(n)])
    res["reduce_scatter"] = out.item()
    gathered = [torch.zeros(1) for _ in range(n)] if rank == 0 else None
    dist.gather(torch.tensor([rank * 3.0]), gathered)
    res["gather_on_0"] = [g.item() for g in gathered] if rank == 0 else None
    t = torch.zeros(1)
    dist.scatter(t, [torch.tensor([10.0 * i]) for i in range(n)] if rank == 0 else None)
    res["scatter"] = t.item()
    objects = [None] * n
    dist.all_gather_object(objects, {"rank": rank})
    res["all_gather_object"] = objects
    shared = [{"from": rank}, rank]
    dist.broadcast_object_list(shared, 0)
    res["broadcast_object_list"] = shared
    # send/recv around the ring; even ranks send first so blocking calls cannot deadlock.
    nxt, prv = (rank + 1) % n, (rank - 1) % n
    got = torch.zeros(1)
    if rank % 2 == 0:
        dist.send(torch.tensor([rank + 0.5]), nxt)
        sender = dist.recv(got)  # src=None: any rank
    else:
        sender = dist.recv(got)
        dist.send(torch.tensor([rank + 0.5]), nxt)
    res["send_recv"] = [got.item(), sender]
    got = torch.zeros(1)
    if rank % 2 == 0:
        dist.send(torch.tensor([rank + 0.25]), dst=nxt, tag=7)
        dist.recv(got, src=prv, tag=7)
    else:
        dist.recv(got, src=prv, tag=7)
        dist.send(torch.tensor([rank + 0.25]), dst=nxt, tag=7)
    res["send_recv_tagged"] = got.item()
    got = torch.zeros(1)
    reqs = [dist.irecv(got, src=prv), dist.isend(torch.tensor([rank * 7.0]), nxt)]
    res["isend_irecv_handles"] = [callable(getattr(req, "wait", None)) for req in reqs]
    for req in reqs:
        req.wait()
    res["isend_irecv"] = got.item()
    # barrier: rank 0 writes a marker late; nobody may pass the barrier before it exists.
    marker = os.path.join(marker_dir, "ds_rank0_was_here")
    if rank == 0:
        time.sleep(0.5)
        with open(marker, "w") as fh:
            fh.write("x")
    dist.barrier()
    res["marker_after_barrier"] = os.path.exists(marker)
    dist.barrier(async_op=True).wait()
    dist.barrier(device_ids=[0])
    dist.monitored_barrier(timeout=timedelta(seconds=30), wait_all_ranks=True)
    if rank == 0:
        os.remove(marker)
    # Groups: every rank creates every group.
    last = dist.new_group([n - 1])
    everyone = dist.new_group(list(range(n)))
    res["group_rank_in_last"] = dist.get_rank(last)
    res["global_rank_of_last_0"] = dist.get_global_rank(last, 0) if rank == n - 1 else None
    res["global_rank_default_group"] = dist.get_global_rank(group_rank=1)
    res["world_group_is_torch_world"] = dist.get_world_group() is torch.distributed.group.WORLD
    res["world_size_of_everyone"] = dist.get_world_size(everyone)
    t = torch.tensor([2.0 + rank])
    dist.all_reduce(t, op=dist.ReduceOp.PRODUCT, group=everyone)
    res["product_in_group"] = t.item()
    if rank == n - 1:
        t = torch.tensor([42.0])
        dist.all_reduce(t, group=last)
        res["sum_in_group_of_one"] = t.item()
        dist.destroy_process_group(last)
    res["still_initialized_after_subgroup_destroy"] = dist.is_initialized()
    return res


def worker_deepspeed_api():
    """DeepSpeed-style code with only the import changed: ``from accelops import comm as dist``."""
    import dataclasses
    from datetime import timedelta

    import torch
    from accelops import comm as dist

    rank, n = int(os.environ["DSAPI_RANK"]), int(os.environ["DSAPI_WORLD_SIZE"])
    res = {"before": [dist.is_initialized(), dist.get_rank(), dist.get_world_size()]}
    info = dist.init_distributed(dist_backend="gloo", distributed_port=int(os.environ["DSAPI_PORT"]), verbose=False,
                                 timeout=timedelta(seconds=INIT_TIMEOUT_S), rank=rank, world_size=n)
    res["info"] = dataclasses.asdict(info)
    res["exported"] = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    res["helpers"] = [dist.get_rank(), dist.get_world_size(), dist.get_local_rank(), dist.is_initialized()]
    res["not_required_again_same"] = dist.init_distributed(dist_init_required=False) == info
    res.update(_deepspeed_calls(dist, torch, rank, n, os.environ["COMM_TEST_DIR"]))
    dist.destroy_process_group()
    res["after_destroy"] = [dist.is_initialized(), dist.get_rank(), dist.get_world_size()]
    # DeepSpeed's documented tcp:// form: rank and world size as arguments, backend under accelops' old name.
    tcp = f"tcp://127.0.0.1:{os.environ['COMM_TEST_TCP_PORT']}"
    info = dist.init_distributed(backend="gloo", init_method=tcp, rank=rank, world_size=n,
                                 timeout=INIT_TIMEOUT_S, verbose=False)
    t = torch.tensor([rank + 1.0])
    dist.all_reduce(t)
    res["tcp"] = [info.init_method, info.source, t.item()]
    dist.destroy_process_group()
    return res


if __name__ == "__main__":
    result = {"collectives": worker_collectives, "launched_allreduce": worker_launched_allreduce,
              "deepspeed_api": worker_deepspeed_api}[sys.argv[1]]()
    line = json.dumps(result)
    os.write(1, (line + "\n").encode())  # one write: mpirun relays ranks' output chunk by chunk
    if os.environ.get("COMM_TEST_DIR"):
        with open(os.path.join(os.environ["COMM_TEST_DIR"], f"result-{result['info']['rank']}.json"), "w") as fh:
            fh.write(line)
