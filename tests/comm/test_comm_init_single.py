"""init_distributed as one process: idempotence, a user-made group, env export, device choice."""
import os
import socket
import sys
from datetime import timedelta

import pytest

from accelops import comm
from accelops.accelerator import get_accelerator


pytestmark = pytest.mark.usefixtures("world_of_one")


def test_world_of_one_and_calling_twice():
    assert (comm.is_initialized(), comm.get_rank(), comm.get_world_size(), comm.get_local_rank()) == (False, 0, 1, 0)
    info = comm.init_distributed(timeout=timedelta(seconds=10))
    assert info == comm.DistributedInfo(rank=0, world_size=1, local_rank=0, backend="gloo", init_method="local",
                                        source="single")
    assert comm.init_distributed(backend="gloo", init_method="env://") is info
    assert comm.is_initialized() and comm.get_world_size() == 1
    with pytest.raises(Exception):
        info.rank = 3  # frozen
    comm.destroy()
    comm.destroy()
    assert not comm.is_initialized()


def test_group_made_by_the_user_is_accepted():
    import torch.distributed as dist

    os.environ["LOCAL_RANK"] = "0"
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    info = comm.init_distributed()
    assert info == comm.DistributedInfo(rank=0, world_size=1, local_rank=0, backend="gloo", init_method=None,
                                        source="user")
    assert comm.init_distributed() is info
    # The user replaces the group: the info follows the new one.
    dist.destroy_process_group()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    assert comm.init_distributed() is not info


def test_values_from_open_mpi_are_exported_to_the_environment():
    os.environ.update(OMPI_COMM_WORLD_RANK="0", OMPI_COMM_WORLD_SIZE="1", OMPI_COMM_WORLD_LOCAL_RANK="0")
    info = comm.init_distributed(timeout=10)
    assert info.source == "openmpi"
    assert {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")} == {
        "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": None}


def test_values_from_slurm_are_exported_to_the_environment():
    os.environ.update(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_LOCALID="0", SLURM_JOB_NODELIST="cn[07-09]",
                      SLURM_JOB_ID="31")
    assert comm.init_distributed(timeout=10).source == "slurm"
    # A world of one stays on loopback; the port still follows the job id.
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], os.environ["RANK"]) == ("127.0.0.1", "15031", "0")


def test_torchrun_values_are_not_rewritten():
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    comm.init_distributed(timeout=10)
    assert "MASTER_ADDR" not in os.environ


@pytest.mark.parametrize("local_rank,calls", [("0", [0]), ("1", [])])
def test_device_is_set_only_when_the_accelerator_has_it(monkeypatch, local_rank, calls):
    # CPU with LOCAL_SIZE unset has one device: local rank 1 must not fail, and gets no set_device call.
    accelerator = get_accelerator()
    assert accelerator.device_count() == 1
    seen = []
    monkeypatch.setattr(accelerator, "set_device", seen.append)
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK=local_rank)
    info = comm.init_distributed(timeout=10)
    assert info.local_rank == int(local_rank) and comm.get_local_rank() == int(local_rank)
    assert seen == calls


def test_a_local_rank_without_its_accelerator_device_is_an_error(monkeypatch):
    accelerator = get_accelerator()
    monkeypatch.setattr(accelerator, "name", "fakegpu")  # one device, and not the shared CPU
    os.environ.update(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    with pytest.raises(comm.DistributedInitError, match="local rank 1 has no fakegpu device: 1 visible"):
        comm.init_distributed(timeout=5)
    assert not comm.is_initialized()


def test_explicit_env_init_method_is_a_world_of_one_without_master_port():
    info = comm.init_distributed(init_method="env://", timeout=10)
    assert (info.world_size, info.init_method, info.source) == (1, "local", "single")


class _FakeWorld:
    """Stands in for mpi4py's COMM_WORLD: a world of 2 seen from one rank."""

    def __init__(self, rank):
        self.rank, self.bcasts = rank, []

    def Get_size(self):
        return 2

    def Get_rank(self):
        return self.rank

    def bcast(self, obj, root):
        self.bcasts.append((obj, root))
        return obj if self.rank == root else ("rank0-host", 4242)


@pytest.mark.parametrize("rank", [0, 1])
def test_mpi4py_broadcasts_master_address_and_port_from_rank_0(monkeypatch, rank):
    import types

    from accelops.comm.env_mapping import resolve_launch_env
    from accelops.comm.init import _fill_master_from_mpi

    world = _FakeWorld(rank)
    fake = types.ModuleType("mpi4py")
    fake.MPI = types.SimpleNamespace(COMM_WORLD=world)
    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", fake.MPI)
    launch = resolve_launch_env({"OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": "2",
                                 "OMPI_COMM_WORLD_LOCAL_SIZE": "1", "MASTER_PORT": "2345"})
    assert (launch.master_addr, launch.master_port) == (None, 2345)
    filled = _fill_master_from_mpi(launch)
    if rank == 0:
        assert world.bcasts == [((socket.gethostname(), 2345), 0)]  # its own host, the given port
        assert (filled.master_addr, filled.master_port) == (socket.gethostname(), 2345)
    else:
        assert world.bcasts == [(None, 0)]
        assert (filled.master_addr, filled.master_port) == ("rank0-host", 4242)
