"""init_distributed with a backend torch knows but this torch build lacks (nccl on a CPU-only torch)."""
import pytest
import torch
import torch.distributed as dist

from accelops import comm
from accelops.comm import DistributedInitError

pytestmark = pytest.mark.usefixtures("world_of_one")


@pytest.fixture
def without(monkeypatch):
    """``without("nccl", ...)``: make torch report those backends as not built in (as on a CPU-only torch)."""
    real = dist.is_backend_available

    def hide(*names):
        monkeypatch.setattr(dist, "is_backend_available", lambda name: name not in names and real(name))

    return hide


@pytest.mark.parametrize("backend", ["nccl", "cpu:gloo,cuda:nccl"])
def test_a_backend_not_built_in_names_it_why_and_what_is_available(without, backend):
    without("nccl")
    with pytest.raises(DistributedInitError) as info:
        comm.init_distributed(dist_backend=backend)
    message = str(info.value)
    assert f"backend {backend!r} is not available in this torch ({torch.__version__})" in message
    assert "NCCL comes only with torch's CUDA and ROCm builds" in message
    assert "Available here: gloo" in message and "nccl" not in message.split("Available here: ")[1].split(";")[0]
    assert "doesn't have NCCL built in" not in message
    assert not comm.is_initialized()


def test_every_missing_backend_is_named(without):
    without("nccl", "mpi")
    with pytest.raises(DistributedInitError) as info:
        comm.init_distributed(dist_backend="cpu:mpi,cuda:nccl")
    assert "MPI comes only with torch built from source" in str(info.value)
    assert "NCCL comes only with torch's CUDA and ROCm builds" in str(info.value)
    assert "install a torch build with mpi, nccl" in str(info.value)


@pytest.mark.skipif(dist.is_nccl_available(), reason="this torch has NCCL")
def test_nccl_on_this_cpu_only_torch_is_a_clear_error():
    with pytest.raises(DistributedInitError, match="backend 'nccl' is not available in this torch.*Available here: "
                                                   ".*gloo"):
        comm.init_distributed(dist_backend="nccl")
    assert not comm.is_initialized()


def test_an_available_backend_still_initialises(without):
    without("nccl")
    info = comm.init_distributed(dist_backend="gloo")
    assert info.backend == "gloo" and info.world_size == 1
