"""Two ranks started by Open MPI's mpirun: init_distributed maps OMPI_* variables and all_reduce works."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from comm_workers import HERE, _LAUNCH_VARS, free_port

MPIRUN = shutil.which("mpirun")


def _is_open_mpi() -> bool:
    try:
        out = subprocess.run([MPIRUN, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Open MPI" in out or "OpenRTE" in out


def _mpirun(tmp_path, extra_env):
    """Run 2 ranks of the launched_allreduce worker under mpirun; their JSON results in rank order."""
    if not _is_open_mpi():
        pytest.skip(f"{MPIRUN} is not Open MPI")
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env.update(COMM_TEST_DIR=str(tmp_path), DS_ACCELERATOR="cpu", **extra_env)
    cmd = [MPIRUN, "-np", "2", "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd += [sys.executable, os.path.join(HERE, "comm_workers.py"), "launched_allreduce"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("mpirun did not finish within 90 s")
    assert proc.returncode == 0, err[-3000:]
    # Read the per-rank files: mpirun may interleave the two ranks' stdout.
    files = sorted(tmp_path.glob("result-*.json"))
    assert [f.name for f in files] == ["result-0.json", "result-1.json"], out
    results = [json.loads(f.read_text()) for f in files]
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
