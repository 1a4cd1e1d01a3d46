"""all_reduce bus bandwidth over message sizes, in the style of nccl-tests, on the accelerator's backend.

Run: ``python benchmarks/bench_allreduce.py [--nprocs 2] [--max-bytes 64M] [--factor 2]``. Not under a
launcher (no torchrun/MPI/SLURM variables), it starts ``--nprocs`` local copies of itself on a free
loopback port; under torchrun/mpirun/srun it just runs. Rank 0 prints one row per size:

    time   per all_reduce, the slowest rank's mean over the timed iterations
    algbw  bytes / time
    busbw  algbw * 2(n-1)/n, the traffic each link carries in a ring all_reduce (n = world size)
    wrong  elements that differ from the expected sum in a separate checked all_reduce (should be 0)
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def _args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nprocs", type=int, default=2, help="local processes to start when not under a launcher")
    parser.add_argument("--min-bytes", type=_size, default=8)
    parser.add_argument("--max-bytes", type=_size, default=64 << 20)
    parser.add_argument("--factor", type=int, default=2, help="size multiplier between rows (2 or 4)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=50, help="most timed iterations per size")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds of timed work per size, about")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"])
    parser.add_argument("--backend", default=None, help="default: get_accelerator().communication_backend_name()")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before the launched ranks are killed")
    return parser.parse_args(argv)


def _launch(args) -> int:
    """Start args.nprocs copies of this script as ranks of a torchrun-like job; return the worst exit code."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(args.nprocs):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(args.nprocs), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(args.nprocs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env=env,
                                      start_new_session=True))
    deadline = time.monotonic() + args.timeout
    try:  # poll all ranks: the first failure (or the deadline, or Ctrl-C) ends the whole job
        while any(proc.poll() is None for proc in procs):
            if any(proc.poll() not in (None, 0) for proc in procs):
                break
            if time.monotonic() > deadline:
                print(f"ranks killed after {args.timeout:g} s", file=sys.stderr)
                break
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    codes = [proc.returncode for proc in procs]
    return max(codes, key=abs)


def _run(args) -> None:
    import torch
    import torch.distributed as dist

    from accelops import comm
    from accelops.accelerator import get_accelerator

    info = comm.init_distributed(backend=args.backend, timeout=max(60.0, args.timeout))
    accelerator = get_accelerator()
    device = torch.device(accelerator.current_device_name())
    dtype = getattr(torch, args.dtype)
    n, elem = info.world_size, torch.empty((), dtype=dtype).element_size()

    def sync():
        accelerator.synchronize()

    if info.rank == 0:
        print(f"# all_reduce sum, backend {info.backend}, {n} ranks ({info.source}), device {device}, "
              f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads/rank")
        print(f"# {'size(B)':>12s} {'count':>10s} {'type':>8s} {'iters':>5s} {'time(us)':>10s} "
              f"{'algbw(GB/s)':>11s} {'busbw(GB/s)':>11s} {'wrong':>5s}")
    size = max(args.min_bytes, elem)
    while size <= args.max_bytes:
        count = size // elem
        buf = torch.ones(count, dtype=dtype, device=device)
        # Correctness: one all_reduce of (rank + 1) must give n(n+1)/2 everywhere.
        buf.fill_(info.rank + 1)
        dist.all_reduce(buf)
        wrong = int((buf != n * (n + 1) / 2).sum().item())
        start = time.perf_counter()
        for _ in range(args.warmup):
            buf.fill_(1)
            dist.all_reduce(buf)
        sync()
        per_op = torch.tensor([(time.perf_counter() - start) / max(1, args.warmup)], dtype=torch.float64,
                              device=device)  # on the device: nccl reduces no CPU tensors
        dist.all_reduce(per_op, op=dist.ReduceOp.MAX)  # every rank must run the same number of iterations
        iters = int(max(3, min(args.iters, args.budget / max(per_op.item(), 1e-9))))
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(buf)
        sync()
        took = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64, device=device)
        dist.all_reduce(took, op=dist.ReduceOp.MAX)
        seconds = took.item()
        algbw = size / seconds / 1e9
        busbw = algbw * 2 * (n - 1) / n
        if info.rank == 0:
            print(f"  {size:12d} {count:10d} {args.dtype:>8s} {iters:5d} {seconds * 1e6:10.1f} "
                  f"{algbw:11.4f} {busbw:11.4f} {wrong:5d}", flush=True)
        size *= args.factor
    comm.destroy()


def main(argv=None) -> int:
    args = _args(argv)
    from accelops.comm import resolve_launch_env

    if resolve_launch_env(os.environ).source == "single" and args.nprocs > 1:
        return _launch(args)
    _run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
