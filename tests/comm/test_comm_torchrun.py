"""Two ranks started by a real torchrun: its agent already serves the store on MASTER_PORT."""
import json
import os
import signal
import subprocess
import sys

import pytest

from comm_workers import HERE, _LAUNCH_VARS, free_port


def test_two_ranks_under_torchrun(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env.update(COMM_TEST_DIR=str(tmp_path), DS_ACCELERATOR="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           os.path.join(HERE, "comm_workers.py"), "launched_allreduce"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun did not finish within 120 s")
    assert proc.returncode == 0, err[-3000:]
    files = sorted(tmp_path.glob("result-*.json"))
    assert [f.name for f in files] == ["result-0.json", "result-1.json"], out
    for rank, result in enumerate(json.loads(f.read_text()) for f in files):
        assert result["info"] == {"rank": rank, "world_size": 2, "local_rank": rank, "backend": "gloo",
                                  "init_method": "env://", "source": "torchrun"}
        assert result["sum"] == 3.0
