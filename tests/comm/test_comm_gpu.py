"""init_distributed on CUDA: the accelerator's backend (nccl) and device; skipped without CUDA."""
import pytest
import torch

from accelops import comm
from accelops.accelerator import get_accelerator
from comm_workers import parse, run_ranks
from helpers import free_port, world_of_one

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def clean_env():
    with world_of_one(accelerator=None):
        yield


def test_world_of_one_uses_nccl_on_the_current_gpu():
    if get_accelerator().name != "cuda":
        pytest.skip(f"accelerator is {get_accelerator().name}")
    info = comm.init_distributed(timeout=30)
    assert (info.backend, info.world_size, info.source) == ("nccl", 1, "single")
    assert torch.cuda.current_device() == 0
    t = torch.arange(4.0, device="cuda")
    torch.distributed.all_reduce(t)
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_nccl_over_env_with_one_rank_per_gpu():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs for 2 nccl ranks")
    port = free_port()
    results = parse(run_ranks(2, "launched_allreduce", lambda r: {
        "RANK": r, "WORLD_SIZE": 2, "LOCAL_RANK": r, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
        "DS_ACCELERATOR": "cuda"}, timeout_s=120))
    assert [r["info"]["backend"] for r in results] == ["nccl", "nccl"]
    assert [r["sum"] for r in results] == [3.0, 3.0]
