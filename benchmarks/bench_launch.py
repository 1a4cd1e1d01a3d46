"""Launch cost: seconds from the command to every rank being inside ``init_distributed``.

For 2 and 4 local CPU ranks (gloo), each way of launching runs the same tiny script, which records
the wall-clock time right after ``accelops.comm.init_distributed()`` returns; the launch time is
the latest rank's time minus the time just before the command started. Ways, interleaved, median
of N runs each:

* ``torchrun``: ``python -m torch.distributed.run --nproc_per_node=K`` directly (the reference);
* ``ds_launch``: ``python -m accelops.launcher --num_gpus K`` (one local node, torchrun underneath);
* ``ds_launch 2 nodes (stand-in ssh)``: two "nodes" on this machine reached through the test suite's
  stand-in ssh (``tests/launcher/standins``), each torchrun under the node guard, K/2 ranks each,
  with the ssh reachability check (the multi-node path, minus a network);
* ``deepspeed``: DeepSpeed's ``deepspeed --num_gpus K`` when DeepSpeed is importable.

Prints each median, its difference from torchrun (target for ds_launch: at most +0.3 s) and the
ratio. Usage: ``python benchmarks/bench_launch.py [runs]`` (default 5). Nothing is asserted.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDINS = os.path.join(REPO, "tests", "launcher", "standins")
WORKER = r'''
import os, sys, time
from accelops import comm
info = comm.init_distributed(dist_backend="gloo", verbose=False)
inside = time.time()
with open(os.path.join(os.environ.get("BENCH_OUT") or sys.argv[-1], f"rank{info.rank}"), "w") as fd:
    fd.write(repr(inside))
comm.barrier()
comm.destroy_process_group()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI_", "SLURM_")) and k not in (
        "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", **extra)
    return env


def time_launch(argv, ranks, workdir, env) -> float:
    """Run ``argv`` in ``workdir``; seconds from its start to the last rank inside init_distributed."""
    out = os.path.join(workdir, "out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    argv = [a.replace("@OUT@", out).replace("@PORT@", str(free_port())) for a in argv]
    start = time.time()
    result = subprocess.run(argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    times = [float(open(os.path.join(out, f"rank{r}")).read()) for r in range(ranks)]
    return max(times) - start


def ways(ranks: int, workdir: str):
    """``[(name, argv, env)]`` for ``ranks`` local ranks."""
    py = sys.executable
    found = [("torchrun", [py, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--master_addr=127.0.0.1",
                           "--master_port=@PORT@", "worker.py", "@OUT@"], clean_env()),
             ("ds_launch", [py, "-m", "accelops.launcher", "--num_gpus", str(ranks), "--master_port", "@PORT@",
                            "worker.py", "@OUT@"], clean_env())]
    if os.path.isdir(STANDINS) and ranks % 2 == 0:
        bin_dir = os.path.join(workdir, "bin")
        os.makedirs(bin_dir, exist_ok=True)
        path = os.path.join(bin_dir, "ssh")
        with open(path, "w") as fd:
            fd.write(f'#!/bin/sh\nexec "{py}" "{os.path.join(STANDINS, "ssh.py")}" "$@"\n')
        os.chmod(path, 0o755)
        with open(os.path.join(workdir, f"hostfile{ranks}"), "w") as fd:
            fd.write(f"node1 slots={ranks // 2}\nnode2 slots={ranks // 2}\n")
        env = clean_env(PATH=bin_dir + os.pathsep + os.environ["PATH"])
        found.append(("ds_launch 2 nodes (stand-in ssh)", [py, "-m", "accelops.launcher", "-H", f"hostfile{ranks}",
                                                            "--launcher", "ssh", "--master_addr", "127.0.0.1",
                                                            "--master_port", "@PORT@", "worker.py", "@OUT@"], env))
    try:
        import deepspeed  # noqa: F401
        found.append(("deepspeed", [py, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ranks), "--master_port",
                                    "@PORT@", "worker.py"], clean_env(BENCH_OUT=os.path.join(workdir, "out"))))
    except Exception:  # noqa: BLE001 - not installed, or broken: leave it out
        pass
    return found


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{cpu}, {os.cpu_count()} cores; medians of {runs} runs; seconds from the command to every rank "
          "inside init_distributed")
    with tempfile.TemporaryDirectory() as workdir:
        with open(os.path.join(workdir, "worker.py"), "w") as fd:
            fd.write(WORKER)
        for ranks in (2, 4):
            table = ways(ranks, workdir)
            times = {name: [] for name, _, _ in table}
            for name, argv, env in table:  # warm the file cache once
                time_launch(argv, ranks, workdir, env)
            for _ in range(runs):  # interleaved so drift hits every way alike
                for name, argv, env in table:
                    times[name].append(time_launch(argv, ranks, workdir, env))
            base = statistics.median(times["torchrun"])
            print(f"\n{ranks} ranks:")
            for name, values in times.items():
                median = statistics.median(values)
                print(f"  {name:<34} {median:7.3f} s   {median - base:+7.3f} s   x{median / base:5.2f}")
        if not any(name == "deepspeed" for name, _, _ in ways(2, workdir)):
            print("\n(deepspeed is not installed: no DeepSpeed row)")


if __name__ == "__main__":
    main()
