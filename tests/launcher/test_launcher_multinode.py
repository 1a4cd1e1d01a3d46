"""Real multi-node runs without a cluster: "nodes" on this machine through stand-in ssh, pdsh and srun.

The stand-in ssh (``standins/ssh.py``) runs the remote command here with the environment of a fresh
login and behaves like ssh when it dies (the remote command is not signalled; it sees end of file
on stdin). Host names node1, node2, ... all reach this machine; ``downhost`` is unreachable. Every
job uses gloo on 127.0.0.1 and a free port; scripts carry a unique marker in their file name, so a
/proc scan finds any process left behind.
"""
import json
import os
import signal
import sys
import time
import uuid
from types import SimpleNamespace

import pytest

from helpers import free_port, is_open_mpi
from launcher_fakes import clean_env, install_standins, kill_marked, launch, processes_with, survivors

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; POSIX sessions")

WORKER = r'''
import json, os, sys
from accelops import comm
info = comm.init_distributed(dist_backend="gloo", verbose=False)
import torch
t = torch.ones(1) * (info.rank + 1)
comm.all_reduce(t)
print(f"hello from rank {info.rank} of {info.world_size}", flush=True)
with open(f"rank{info.rank}.json", "w") as fd:
    json.dump({"rank": info.rank, "world_size": info.world_size, "local_rank": info.local_rank,
               "source": info.source, "sum": t.item(), "argv": sys.argv[1:],
               "host": os.environ.get("STANDIN_SSH_HOST") or os.environ.get("SLURMD_NODENAME"),
               "my_var": os.environ.get("MY_VAR"), "nccl": os.environ.get("NCCL_TEST_VALUE"),
               "secret": os.environ.get("NOT_FORWARDED"), "cross_rank": os.environ.get("CROSS_RANK")}, fd)
comm.destroy_process_group()
'''

# No torch: what torchrun (or srun, mpirun) gave this rank; then, with --mode=fail, rank 1 exits with
# --code (7) once rank 0 is up and rank 0 waits; with --mode=wait every rank waits.
ENV_ONLY = r'''
import json, os, sys, time
rank = int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or os.environ["OMPI_COMM_WORLD_RANK"])
with open(f"rank{rank}.json", "w") as fd:
    json.dump({"rank": rank, "world_size": os.environ.get("WORLD_SIZE"), "host": os.environ.get("STANDIN_SSH_HOST"),
               "local_world_size": os.environ.get("LOCAL_WORLD_SIZE"), "argv": sys.argv[1:]}, fd)
print(f"rank {rank} up", flush=True)
open(f"up{rank}", "w").close()
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
mode = opts.get("mode", "")
if mode == "fail" and rank == 1:
    while not os.path.exists("up0"):
        time.sleep(0.05)
    print("boom: rank 1 fails on purpose", file=sys.stderr, flush=True)
    sys.exit(int(opts.get("code", "7")))
if mode in ("fail", "wait"):
    time.sleep(600)
    open(f"done{rank}", "w").close()
'''


@pytest.fixture
def cluster(tmp_path):
    """Stand-ins on PATH, a job folder, a marker; kills anything left with the marker afterwards."""
    bin_dir = install_standins(tmp_path / "bin")
    job = tmp_path / "job"
    job.mkdir()
    marker = f"m{uuid.uuid4().hex[:12]}"
    c = SimpleNamespace(job=job, log=tmp_path / "ssh.log", marker=marker, script=f"job_{marker}.py")
    c.env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", STANDIN_SSH_LOG=str(c.log))

    def write(script, hostfile):
        (job / c.script).write_text(script)
        (job / "hostfile").write_text(hostfile)
    c.write = write
    c.port_args = lambda: ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    c.ssh_calls = lambda: [line.split("\t") for line in c.log.read_text().splitlines()] if c.log.exists() else []
    c.rank = lambda r: json.loads((job / f"rank{r}.json").read_text())
    yield c
    kill_marked(marker)


@pytest.mark.parametrize("launcher", ["ssh", "pdsh"])
def test_two_node_job_runs_with_environment(cluster, launcher):
    cluster.write(WORKER, "node1 slots=1\nnode2 slots=1\n")
    (cluster.job / ".deepspeed_env").write_text("MY_VAR='from env file $HOME \"q\"'\n")
    env = dict(cluster.env, NCCL_TEST_VALUE="a b $c 'd'", NOT_FORWARDED="secret")
    if launcher == "pdsh":
        env["PDSH_SSH_ARGS_APPEND"] = "-o StrictHostKeyChecking=no"
    result = launch(["-H", "hostfile", "--launcher", launcher, *cluster.port_args(), cluster.script, "x y"],
                    cwd=cluster.job, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    for rank, host in ((0, "node1"), (1, "node2")):
        got = cluster.rank(rank)
        assert (got["rank"], got["world_size"], got["local_rank"], got["source"]) == (rank, 2, 0, "torchrun")
        assert got["sum"] == 3.0 and got["host"] == host and got["cross_rank"] == str(rank)
        assert got["argv"] == ["--local_rank=0", "x y"]
        assert got["my_var"] == 'from env file $HOME "q"' and got["nccl"] == "a b $c 'd'"
        assert got["secret"] is None   # a fresh login: only what ds_launch exports arrives
        assert f"{host}: hello from rank {rank} of 2\n" in result.stdout
    checks = [call for call in cluster.ssh_calls() if call[1] == "true"]
    assert sorted(call[0] for call in checks) == ["node1", "node2"]
    assert all("BatchMode=yes" in call[2] and "ConnectTimeout=5" in call[2] for call in checks)
    if launcher == "pdsh":
        assert all("StrictHostKeyChecking=no" in call[2] for call in cluster.ssh_calls())


def test_include_and_exclude_choose_the_nodes(cluster):
    cluster.write(ENV_ONLY, "node1 slots=2\nnode2 slots=2\nnode3 slots=2\n")
    result = launch(["-H", "hostfile", "--launcher", "ssh", "--exclude", "node2@node3:1", *cluster.port_args(),
                     cluster.script], cwd=cluster.job, env=cluster.env)
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [cluster.rank(r) for r in range(3)]
    assert [(r["host"], r["world_size"], r["local_world_size"]) for r in ranks] == [
        ("node1", "3", "2"), ("node1", "3", "2"), ("node3", "3", "1")]
    assert "node2" not in {call[0] for call in cluster.ssh_calls()}

    for r in range(3):
        (cluster.job / f"rank{r}.json").unlink()
    cluster.log.unlink()
    result = launch(["-H", "hostfile", "--launcher", "ssh", "--include", "node2:1@node3", *cluster.port_args(),
                     cluster.script], cwd=cluster.job, env=cluster.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [(cluster.rank(r)["host"], cluster.rank(r)["world_size"]) for r in range(3)] == [
        ("node2", "3"), ("node3", "3"), ("node3", "3")]
    assert {call[0] for call in cluster.ssh_calls()} == {"node2", "node3"}


@pytest.mark.parametrize("launcher", ["ssh", "pdsh"])
def test_failing_rank_on_second_node_stops_every_node(cluster, launcher):
    cluster.write(ENV_ONLY, "node1 slots=1\nnode2 slots=1\n")
    started = time.monotonic()
    result = launch(["-H", "hostfile", "--launcher", launcher, *cluster.port_args(), cluster.script, "--mode=fail"],
                    cwd=cluster.job, env=cluster.env)
    elapsed = time.monotonic() - started
    report = result.stdout + result.stderr
    assert result.returncode == 7, report
    failed = "ds_launch: node2 (node 1) failed: rank 1 (local rank 0) exited with code 7; stopping node1"
    assert failed in result.stderr, report
    tail = result.stderr.split("last ", 1)[1]
    assert "of node2:\n" in tail and "    boom: rank 1 fails on purpose\n" in tail, report
    assert "ChildFailedError" not in tail, report
    assert result.stderr.rstrip().endswith("job failed on node2; exit status 7"), report
    assert (cluster.job / "up0").exists() and not (cluster.job / "done0").exists()
    assert survivors(cluster.marker, within=3.0) == []
    assert elapsed < 120


@pytest.mark.parametrize("launcher", ["ssh", "pdsh"])
def test_ctrl_c_stops_every_node(cluster, launcher, tmp_path):
    cluster.write(ENV_ONLY, "node1 slots=1\nnode2 slots=1\n")
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = launch(["-H", "hostfile", "--launcher", launcher, *cluster.port_args(), cluster.script,
                       "--mode=wait"], cwd=cluster.job, env=cluster.env, stdout=out, stderr=err,
                      start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not all((cluster.job / f"up{r}").exists() for r in range(2)):
                assert proc.poll() is None and time.monotonic() < deadline, "the ranks did not start"
                time.sleep(0.1)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
            stopped = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = (tmp_path / "err.txt").read_text()
    assert code == 130, stderr
    assert "ds_launch: got SIGINT; stopping node1, node2" in stderr and "stopped after SIGINT" in stderr
    assert processes_with(cluster.marker) == []   # ds_launch returns after the nodes are gone
    assert stopped < 20, stopped
    assert not any((cluster.job / f"done{r}").exists() for r in range(2))


def test_unreachable_host_is_an_error_before_anything_starts(cluster):
    cluster.write(ENV_ONLY, "node1 slots=1\ndownhost slots=1\ndownhost2 slots=1\n")
    result = launch(["-H", "hostfile", "--launcher", "ssh", *cluster.port_args(), cluster.script],
                    cwd=cluster.job, env=cluster.env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("ds_launch: error: 2 host(s) not reachable over ssh (checked with "
                                    "`ssh -o BatchMode=yes -o ConnectTimeout=5 HOST true`): downhost: ssh exited "
                                    "with 255 (ssh: connect to host downhost port 22: Connection refused); "
                                    "downhost2: ssh exited with 255")
    assert "node1:" not in result.stderr and "--no_ssh_check" in result.stderr
    assert {call[1] for call in cluster.ssh_calls()} == {"true"}   # only the checks ran
    assert not (cluster.job / "up0").exists()


def test_without_the_check_a_lost_node_ends_the_job(cluster):
    """--no_ssh_check: the unreachable node's ssh fails (255) and the other node is stopped."""
    cluster.write(ENV_ONLY, "node1 slots=1\ndownhost slots=1\n")
    result = launch(["--no_ssh_check", "-H", "hostfile", "--launcher", "ssh", *cluster.port_args(), cluster.script,
                     "--mode=wait"], cwd=cluster.job, env=cluster.env)
    assert result.returncode == 255, result.stderr
    assert ("downhost (node 1) failed: ssh exited with code 255 (the connection failed or was lost); "
            "stopping node1") in result.stderr
    assert "connect to host downhost port 22: Connection refused" in result.stderr
    assert "true" not in {call[1] for call in cluster.ssh_calls()}
    assert processes_with(cluster.marker) == []


def test_srun_runs_every_rank_and_a_failure_ends_the_step(cluster):
    cluster.write(WORKER, "node1 slots=1\nnode2 slots=1\n")
    result = launch(["-H", "hostfile", "--launcher", "slurm", *cluster.port_args(), cluster.script, "x y"],
                    cwd=cluster.job, env=dict(cluster.env, NCCL_TEST_VALUE="a b"))
    assert result.returncode == 0, result.stdout + result.stderr
    for rank, host in ((0, "node1"), (1, "node2")):
        got = cluster.rank(rank)
        assert (got["rank"], got["world_size"], got["source"], got["host"]) == (rank, 2, "slurm", host)
        assert got["sum"] == 3.0 and got["argv"] == ["--local_rank=0", "x y"] and got["nccl"] == "a b"
    assert cluster.ssh_calls() == []   # srun reaches the nodes itself: no ssh check

    cluster.write(ENV_ONLY, "node1 slots=1\nnode2 slots=1\n")
    result = launch(["-H", "hostfile", "--launcher", "slurm", *cluster.port_args(), cluster.script, "--mode=fail",
                     "--code=5"], cwd=cluster.job, env=cluster.env)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "ds_launch: srun failed: rank 1 exited with code 5 on node2" in result.stderr
    assert "    boom: rank 1 fails on purpose\n" in result.stderr
    assert processes_with(cluster.marker) == []


@pytest.mark.skipif(not is_open_mpi(), reason="Open MPI's mpirun is not installed (CI installs openmpi-bin)")
def test_openmpi_runs_every_rank_and_a_failure_ends_the_job(cluster):
    cluster.write(WORKER, "localhost slots=2\n")
    args = ["-H", "hostfile", "--force_multi", "--launcher", "openmpi"]
    result = launch([*args, *cluster.port_args(), cluster.script, "x y"], cwd=cluster.job,
                    env=dict(cluster.env, NCCL_TEST_VALUE="a b $c"))
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in range(2):
        got = cluster.rank(rank)
        assert (got["rank"], got["world_size"], got["source"], got["sum"]) == (rank, 2, "openmpi", 3.0)
        assert got["argv"] == [f"--local_rank={rank}", "x y"] and got["nccl"] == "a b $c"
    assert cluster.ssh_calls() == []   # localhost: mpirun needs no ssh

    cluster.write(ENV_ONLY, "localhost slots=2\n")
    result = launch([*args, *cluster.port_args(), cluster.script, "--mode=fail", "--code=3"], cwd=cluster.job,
                    env=cluster.env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "ds_launch: mpirun failed: rank 1 exited with code 3" in result.stderr
    assert processes_with(cluster.marker) == []
