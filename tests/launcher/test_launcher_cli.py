"""The ds_launch command: import cost, --dry_run output, error exits, a real local run of 2 ranks."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

from helpers import free_port, is_open_mpi
from launcher_fakes import clean_env as _env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ds_launch(*argv, cwd, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "accelops.launcher", *argv], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def test_import_launcher_imports_no_torch_and_starts_nothing():
    probe = ("import json, sys\nevents = []\n"
             "sys.addaudithook(lambda e, a: events.append(e) if e in ('subprocess.Popen', 'os.fork') else None)\n"
             "import accelops.launcher, accelops.launcher.cli, accelops.launcher.plan, accelops.launcher.rank\n"
             "print(json.dumps({'torch': 'torch' in sys.modules, 'events': events}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"torch": False, "events": []}


def test_dry_run_two_nodes_ssh_prints_every_node(tmp_path):
    (tmp_path / "train.py").write_text("raise SystemExit('must not run')\n")
    (tmp_path / "hostfile").write_text("worker-0 slots=2\nworker-1 slots=2\n")
    result = ds_launch("-H", "hostfile", "--launcher", "ssh", "--dry_run", "train.py", "--epochs", "2", cwd=tmp_path,
                       env=_env(NCCL_DEBUG="INFO"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "launcher: ssh (--launcher)" in out and "world size: 4 rank(s) on 2 node(s)" in out
    assert "node 0: host worker-0" in out and "node 1: host worker-1" in out
    assert out.count("  command: ssh worker-") == 2 and "NCCL_DEBUG=INFO" in out
    assert "--node_rank=1" in out and "train.py '--local_rank=${local_rank}' --epochs 2" in out


def test_dry_run_pdsh_with_a_stand_in_pdsh_on_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pdsh").write_text("#!/bin/sh\nexit 99\n")
    (bin_dir / "pdsh").chmod(0o755)
    (tmp_path / "train.py").write_text("")
    (tmp_path / "hostfile").write_text("worker-0 slots=1\nworker-1 slots=1\n")
    env = _env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PDSH_SSH_ARGS_APPEND="-p 2222")
    result = ds_launch("-H", "hostfile", "--dry_run", "train.py", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "launcher: pdsh (pdsh is installed)" in result.stdout
    assert "command: PDSH_RCMD_TYPE=ssh pdsh -S -f 1024 -w worker-0 " in result.stdout


@pytest.mark.parametrize("argv, message", [
    (["missing.py"], "user script 'missing.py' does not exist"),
    (["-H", "bad_hostfile", "train.py"], "bad_hostfile:2: 'worker-1 slots=0': slots must be a positive integer"),
    (["-H", "dup_hostfile", "train.py"], "host 'a' is listed twice"),
    (["-H", "bad_hostfile", "-i", "a@b", "-e", "a", "train.py"], "bad_hostfile:2"),
    (["--include", "nowhere:0", "train.py"], "--include: host 'nowhere' is not in the resource pool"),
    (["--include", "localhost", "--exclude", "localhost:0", "train.py"], "exclude each other"),
    (["--num_nodes", "2", "train.py"], "--num_nodes 2 is larger than the resource pool: 1 host"),
    (["--launcher", "rsh", "train.py"], "--launcher 'rsh' is not one of"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, argv, message):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "bad_hostfile").write_text("worker-0 slots=1\nworker-1 slots=0\n")
    (tmp_path / "dup_hostfile").write_text("a slots=1\na slots=1\n")
    result = ds_launch(*argv, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("ds_launch: error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_accelerator_errors_are_one_line_too(tmp_path):
    (tmp_path / "train.py").write_text("")
    result = ds_launch("--dry_run", "train.py", cwd=tmp_path, env={**_env(), "DS_ACCELERATOR": "bogus"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("ds_launch: error: DS_ACCELERATOR='bogus' is not a known accelerator")


def test_multi_node_run_needs_the_launcher_program(tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "hostfile").write_text("worker-0 slots=1\nworker-1 slots=1\n")
    (tmp_path / "empty").mkdir()
    for launcher, program in (("ssh", "ssh"), ("slurm", "srun")):
        result = ds_launch("-H", "hostfile", "--launcher", launcher, "train.py", cwd=tmp_path,
                           env=_env(PATH=str(tmp_path / "empty")))
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr == f"ds_launch: error: --launcher {launcher} needs {program!r}, which is not on PATH\n"


WORKER = r'''
import json, os, sys, tempfile
from accelops import comm
info = comm.init_distributed(dist_backend="gloo", verbose=False)
import torch
t = torch.ones(1) * (info.rank + 1)
comm.all_reduce(t)
# the launcher chain: this rank -> torchrun -> node guard -> ds_launch; --save_pid names torchrun in
# <tmp>/<ds_launch pid>.deepspeed
def parent(pid):
    with open(f"/proc/{pid}/status") as fd:
        return int(next(l for l in fd if l.startswith("PPid:")).split()[1])
torchrun_pid = os.getppid()
launcher_pid = parent(parent(torchrun_pid))
pid_file = os.path.join(tempfile.gettempdir(), f"{launcher_pid}.deepspeed")
with open(os.path.join(sys.argv[-1], f"rank{info.rank}.json"), "w") as fd:
    json.dump({"rank": info.rank, "world_size": info.world_size, "local_rank": info.local_rank,
               "source": info.source, "sum": t.item(), "argv": sys.argv[1:-1], "my_var": os.environ.get("MY_VAR"),
               "local_size": os.environ.get("LOCAL_SIZE"),
               "pid_file": open(pid_file).read() if os.path.exists(pid_file) else None,
               "torchrun_pid": torchrun_pid, "launcher_pid": launcher_pid}, fd)
comm.destroy_process_group()
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_real_local_run_two_cpu_ranks(tmp_path):
    (tmp_path / "script.py").write_text(WORKER)
    (tmp_path / ".deepspeed_env").write_text("MY_VAR=from env file $HOME\n")
    out = tmp_path / "out"
    out.mkdir()
    result = ds_launch("--num_gpus", "2", "--master_port", str(free_port()), "--save_pid", "script.py",
                       "two words", "$X", str(out), cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, got in enumerate(results):
        assert (got["rank"], got["world_size"], got["local_rank"], got["source"]) == (rank, 2, rank, "torchrun")
        assert got["sum"] == 3.0
        assert got["argv"] == [f"--local_rank={rank}", "two words", "$X"]
        assert got["my_var"] == "from env file $HOME" and got["local_size"] == "2"
        assert got["pid_file"] == str(got["torchrun_pid"])
    pid_file = os.path.join(tempfile.gettempdir(), f"{results[0]['launcher_pid']}.deepspeed")
    assert not os.path.exists(pid_file)


def test_local_run_returns_torchruns_failure(tmp_path):
    (tmp_path / "fail.py").write_text("import sys; sys.exit(3)\n")
    result = ds_launch("--num_gpus", "1", "--master_port", str(free_port()), "fail.py", cwd=tmp_path, timeout=240)
    assert result.returncode != 0


def test_rank_helper_binds_cores_and_adds_local_rank(tmp_path):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity here")
    script = tmp_path / "show.py"
    script.write_text("import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'cores': sorted("
                      "os.sched_getaffinity(0)), 'omp': os.environ.get('OMP_NUM_THREADS')}))")
    cores = sorted(os.sched_getaffinity(0))
    env = _env(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2")
    argv = [sys.executable, "-m", "accelops.launcher.rank", "--", str(script), "a b"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout)["argv"] == ["--local_rank=1", "a b"]
    if len(cores) >= 2:
        argv.insert(3, "--bind_cores_to_rank")
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        got = json.loads(result.stdout)
        share = len(cores) // 2
        assert got["cores"] == cores[share:2 * share] and got["omp"] == str(share)


MPI_WORKER = r'''
import json, os, sys
from accelops import comm
info = comm.init_distributed(dist_backend="gloo", verbose=False)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"mpi{info.rank}.json"), "w") as fd:
    json.dump({"rank": info.rank, "world_size": info.world_size, "source": info.source, "argv": sys.argv[1:],
               "nccl": os.environ.get("NCCL_TEST_VALUE")}, fd)
comm.destroy_process_group()
'''


def test_openmpi_command_runs_under_real_mpirun(tmp_path):
    """The planned mpirun line, run as is: both ranks start, get --local_rank and the forwarded variable."""
    if not is_open_mpi():
        pytest.skip("Open MPI's mpirun is not installed")
    from accelops.launcher.cli import parser
    from accelops.launcher.plan import build_plan
    (tmp_path / "w.py").write_text(MPI_WORKER)
    (tmp_path / "hostfile").write_text("localhost slots=2\n")
    env = _env(NCCL_TEST_VALUE="a b $c 'd'")
    args = parser().parse_args(["-H", "hostfile", "--force_multi", "--launcher", "openmpi", "--master_port",
                                str(free_port()), "w.py", "x y"])
    plan = build_plan(args, environ=env, cwd=str(tmp_path))
    [command] = plan.commands
    result = subprocess.run(command.argv, env={**env, **command.env}, cwd=tmp_path, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in range(2):
        got = json.loads((tmp_path / f"mpi{rank}.json").read_text())
        assert got == {"rank": rank, "world_size": 2, "source": "openmpi", "argv": [f"--local_rank={rank}", "x y"],
                       "nccl": "a b $c 'd'"}
