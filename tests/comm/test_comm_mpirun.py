"""Two ranks started by Open MPI's mpirun: init_distributed maps OMPI_* variables and all_reduce works."""
import os
import shutil
import sys

import pytest

from comm_workers import HERE, run_launcher
from helpers import free_port, is_open_mpi, launch_free_environ

MPIRUN = shutil.which("mpirun")


def _mpirun(tmp_path, extra_env):
    """Run 2 ranks of the launched_allreduce worker under mpirun; their JSON results in rank order."""
    if not is_open_mpi():
        pytest.skip(f"{MPIRUN} is not Open MPI")
    env = launch_free_environ(COMM_TEST_DIR=str(tmp_path), DS_ACCELERATOR="cpu", **extra_env)
    cmd = [MPIRUN, "-np", "2", "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd += [sys.executable, os.path.join(HERE, "comm_workers.py"), "launched_allreduce"]
    results = run_launcher(cmd, env, tmp_path, timeout_s=90)
    assert len(results) == 2
    for rank, res in enumerate(results):
        assert res["info"] == {"rank": rank, "world_size": 2, "local_rank": rank, "backend": "gloo",
                               "init_method": "env://", "source": "openmpi"}
        assert res["sum"] == 3.0
    return results


needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason="mpirun not on PATH (Debian: apt-get install openmpi-bin)")


@needs_mpirun
def test_two_ranks_under_mpirun(tmp_path):
    port = free_port()
    for rank, res in enumerate(_mpirun(tmp_path, {"MASTER_PORT": str(port)})):
        # Mapped values are exported torchrun-style; all ranks on one host -> loopback master.
        assert res["exported"] == {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


@needs_mpirun
def test_mpirun_without_master_port_broadcasts_one_with_mpi4py(tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install mpi4py)")
    results = _mpirun(tmp_path, {})
    ports = {res["exported"]["MASTER_PORT"] for res in results}
    assert len(ports) == 1 and 0 < int(ports.pop()) < 65536
