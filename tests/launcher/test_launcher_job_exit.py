"""A finished job exits 0: scripts that never destroy their process group still end cleanly.

gloo aborts now and then at interpreter exit when the group outlives the script (a worker thread
asks for the GIL during finalisation; see :mod:`accelops.comm.teardown`). ``init_distributed``
therefore destroys the groups in an ``atexit`` function. These tests look at the exact point: an
``atexit`` function the script registers *before* ``init_distributed`` runs *after* accelops' one
(atexit is last in, first out) and is the last code to run before finalisation; it records whether
the group still exists there. The abort itself is a race (4 runs in 50 before, 0 after); its
counts are measured outside the test suite.
"""
import json
import subprocess
import sys

import pytest

from helpers import free_port
from launcher_fakes import clean_env, launch

# Registers the observer, initialises, reduces, and ends without destroy_process_group.
SCRIPT = r'''
import atexit, json, os, sys
import torch.distributed as dist

def observe():   # registered first, so it runs last: after accelops' own atexit function
    with open(f"exit{os.environ.get('RANK', '0')}.json", "w") as fd:
        json.dump({"initialized": dist.is_initialized()}, fd)

atexit.register(observe)
import torch
from accelops import comm
info = comm.init_distributed(dist_backend="gloo", verbose=False)
t = torch.ones(1) * (info.rank + 1)
comm.all_reduce(t)
print(f"rank {info.rank} of {info.world_size}: {t.item()}", flush=True)
if "--destroy" in sys.argv:
    comm.destroy_process_group()
'''


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "ends.py"
    path.write_text(SCRIPT)
    return path


def _seen(tmp_path, rank):
    return json.loads((tmp_path / f"exit{rank}.json").read_text())


def test_a_world_of_one_destroys_its_group_before_finalisation(tmp_path, script):
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=clean_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "rank 0 of 1: 1.0\n"
    assert _seen(tmp_path, 0) == {"initialized": False}


def test_a_script_that_destroys_the_group_itself_is_left_alone(tmp_path, script):
    result = subprocess.run([sys.executable, str(script), "--destroy"], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert _seen(tmp_path, 0) == {"initialized": False}


def test_two_ranks_under_ds_launch_end_with_their_groups_destroyed(tmp_path, script):
    result = launch(["--num_gpus", "2", "--master_port", str(free_port()), script.name], cwd=tmp_path,
                    env=clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "terminate called" not in result.stderr
    assert "rank 0 of 2: 3.0" in result.stdout and "rank 1 of 2: 3.0" in result.stdout   # lines may interleave
    assert [_seen(tmp_path, rank) for rank in range(2)] == [{"initialized": False}] * 2

