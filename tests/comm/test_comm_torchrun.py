"""Two ranks started by a real torchrun: its agent already serves the store on MASTER_PORT."""
import os
import sys

from comm_workers import HERE, run_launcher
from helpers import free_port, launch_free_environ


def test_two_ranks_under_torchrun(tmp_path):
    env = launch_free_environ(COMM_TEST_DIR=str(tmp_path), DS_ACCELERATOR="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           os.path.join(HERE, "comm_workers.py"), "launched_allreduce"]
    results = run_launcher(cmd, env, tmp_path)
    assert len(results) == 2
    for rank, result in enumerate(results):
        assert result["info"] == {"rank": rank, "world_size": 2, "local_rank": rank, "backend": "gloo",
                                  "init_method": "env://", "source": "torchrun"}
        assert result["sum"] == 3.0
