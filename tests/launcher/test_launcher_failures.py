"""Reading a failed node's output (torchrun, Open MPI and srun reports) and the reachability check."""
import os

import pytest

from accelops.launcher import LaunchError
from accelops.launcher.failures import RankFailure, find_failure, user_tail
from accelops.launcher.supervise import check_hosts, hosts_to_check
from launcher_fakes import install_standins

# torchrun 2.x after local rank 1 (global rank 3) exited with 7; its agent log and traceback follow the user's lines.
TORCHRUN = """\
step 10 loss 0.5
Traceback (most recent call last):
  File "train.py", line 9, in <module>
    raise ValueError("bad batch")
ValueError: bad batch
W1130 20:40:09.122000 29184 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 29212 closing signal SIGTERM
E1130 20:40:09.124000 29184 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 7) local_rank: 1 (pid: 29213) of binary: /usr/bin/python
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-30_20:40:09
  host      : worker-1
  rank      : 2 (local_rank: 0)
  exitcode  : -15 (pid: 29212)  (SIGTERM)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-30_20:40:09
  host      : worker-1
  rank      : 3 (local_rank: 1)
  exitcode  : 7 (pid: 29213)
  error_file: <N/A>
============================================================""".splitlines()

OPEN_MPI = """\
--------------------------------------------------------------------------
Primary job  terminated normally, but 1 process returned
a non-zero exit code. Per user-direction, the job has been aborted.
--------------------------------------------------------------------------
--------------------------------------------------------------------------
mpirun detected that one or more processes exited with non-zero status, thus causing
the job to be terminated. The first process to do so was:

  Process name: [[52341,1],1]
  Exit code:    3
--------------------------------------------------------------------------""".splitlines()


def test_torchrun_root_cause():
    assert find_failure(TORCHRUN) == RankFailure(rank=3, exit_code=7, local_rank=1, host="worker-1")
    assert find_failure(TORCHRUN).describe() == "rank 3 (local rank 1) exited with code 7"
    killed = [line.replace("exitcode  : 7 (pid", "exitcode  : -9 (pid") for line in TORCHRUN]
    assert find_failure(killed).exit_code == 137


def test_user_tail_leaves_out_torchruns_report():
    tail = user_tail(TORCHRUN)
    assert tail == TORCHRUN[:5]
    assert user_tail(TORCHRUN, count=2) == TORCHRUN[3:5]
    assert user_tail([f"line {i}" for i in range(30)]) == [f"line {i}" for i in range(10, 30)]
    stars = "*" * 41
    notice = ("Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, to avoid your "
              "system being overloaded, please further tune the variable for optimal performance in your "
              "application as needed. ")
    assert user_tail(["", stars, notice, stars, "rank 0 up", "boom"]) == ["rank 0 up", "boom"]
    assert user_tail(["mine", stars, "not torchrun's", stars]) == ["mine", stars, "not torchrun's", stars]


def test_open_mpi_and_srun_reports():
    assert find_failure(OPEN_MPI) == RankFailure(rank=1, exit_code=3)
    srun = ["boom", "srun: error: node2: task 1: Exited with exit code 5", "srun: error: node1: task 0: Killed"]
    assert find_failure(srun) == RankFailure(rank=1, exit_code=5, host="node2")
    assert find_failure(["srun: error: node2: tasks 4-7: Exited with exit code 2"]).rank == 4
    assert find_failure(["nothing to see"]) is None
    assert RankFailure(None, None).describe() == "a rank failed"


def test_hosts_to_check():
    class Node:
        def __init__(self, host):
            self.host = host

    class Plan:
        nodes = [Node("localhost"), Node("worker-1")]
    for launcher, expected in (("ssh", ["localhost", "worker-1"]), ("pdsh", ["localhost", "worker-1"]),
                               ("openmpi", ["worker-1"]), ("mpich", ["worker-1"]), ("slurm", [])):
        Plan.launcher = launcher
        assert hosts_to_check(Plan, {}) == expected
    Plan.launcher = "pdsh"
    assert hosts_to_check(Plan, {"PDSH_RCMD_TYPE": "rsh"}) == []


def test_check_hosts_names_every_unreachable_host(tmp_path):
    bin_dir = install_standins(tmp_path / "bin", ("ssh",))
    log = tmp_path / "ssh.log"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", STANDIN_SSH_LOG=str(log))
    check_hosts(["node1", "node2"], ["-p", "2222"], env=env)
    calls = sorted(line.split("\t") for line in log.read_text().splitlines())
    assert calls == [["node1", "true", "-o BatchMode=yes -o ConnectTimeout=5 -p 2222"],
                     ["node2", "true", "-o BatchMode=yes -o ConnectTimeout=5 -p 2222"]]
    with pytest.raises(LaunchError) as info:
        check_hosts(["node1", "down-a", "down-b"], [], env=env)
    message = str(info.value)
    assert message.startswith("2 host(s) not reachable over ssh")
    assert "down-a: ssh exited with 255 (ssh: connect to host down-a port 22: Connection refused)" in message
    assert "down-b: ssh exited with 255" in message and "node1" not in message
    check_hosts([], [], env=env)   # nothing to check: no ssh at all
