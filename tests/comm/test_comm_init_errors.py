"""init_distributed in this process: clear errors before anything is initialised, and timeouts."""
import os
import socket
import sys
import time

import pytest

from accelops import comm
from accelops.comm import DistributedInitError
from helpers import free_port


pytestmark = pytest.mark.usefixtures("world_of_one")


def _env(**values):
    os.environ.update({k: str(v) for k, v in values.items()})


def _init_error(**kwargs):
    with pytest.raises(DistributedInitError) as info:
        comm.init_distributed(**kwargs)
    assert not comm.is_initialized()
    return str(info.value)


def test_missing_master_port():
    _env(RANK=0, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1")
    msg = _init_error(timeout=5)
    assert "MASTER_PORT not set" in msg and "torchrun launch of world size 2" in msg
    assert "variables seen: MASTER_ADDR='127.0.0.1', RANK='0', WORLD_SIZE='2'" in msg


def test_missing_master_address_and_port_for_mpi_mentions_mpi4py(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if absent; never MPI_Init in the test process
    _env(OMPI_COMM_WORLD_RANK=0, OMPI_COMM_WORLD_SIZE=4, OMPI_COMM_WORLD_LOCAL_SIZE=2)
    msg = _init_error(timeout=5)
    assert "MASTER_ADDR and MASTER_PORT not set" in msg and "openmpi launch of world size 4" in msg
    assert "mpi4py" in msg and "tcp://host:port" in msg


def test_port_in_use_is_detected_on_rank_0_before_init():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        _env(RANK=0, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        start = time.monotonic()
        msg = _init_error(timeout=20)
    assert time.monotonic() - start < 5
    assert f"cannot listen on MASTER_PORT {port}" in msg and "EADDRINUSE" in msg


def test_timeout_says_how_many_ranks_joined():
    _env(RANK=0, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port())
    start = time.monotonic()
    msg = _init_error(timeout=3)
    waited = time.monotonic() - start
    assert 2.9 < waited < 15
    assert "timed out waiting for peers: 1 of 2 ranks joined after 3." in msg
    assert "missing rank(s) 1 " in msg
    assert "rank 0" in msg and "via env://" in msg


def test_non_zero_rank_without_a_master_says_it_could_not_reach_it():
    port = free_port()
    _env(RANK=1, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    msg = _init_error(timeout=2)
    assert f"rank 1 could not reach the master at 127.0.0.1:{port}" in msg and "0 of 2" in msg


def test_conflicting_variables_stop_init():
    _env(RANK=1, WORLD_SIZE=2, OMPI_COMM_WORLD_RANK=0, OMPI_COMM_WORLD_SIZE=2, MASTER_ADDR="h", MASTER_PORT=1)
    assert "RANK=1 but OMPI_COMM_WORLD_RANK=0" in _init_error(timeout=5)


@pytest.mark.parametrize("method,expected", [
    ("nccl://x", "unsupported init_method 'nccl://x'"),
    ("tcp://127.0.0.1", "must look like tcp://host:port"),
    ("tcp://127.0.0.1:99999", "bad init_method"),
])
def test_bad_init_methods(method, expected):
    _env(RANK=0, WORLD_SIZE=2)
    assert expected in _init_error(init_method=method, timeout=5)


def test_bad_timeout():
    with pytest.raises(ValueError, match="timeout must be positive"):
        comm.init_distributed(timeout=0)


def test_two_processes_with_the_same_rank():
    import torch.distributed as dist

    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, 3, True, wait_for_workers=False)  # plays rank 0
    server.add("accelops/joined/1", 1)  # a first process already joined as rank 1
    _env(RANK=1, WORLD_SIZE=3, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    assert "another process already joined as rank 1" in _init_error(timeout=5)


@pytest.mark.parametrize("timeout", ["abc", float("nan"), float("inf"), 0, -1, True, "30"])
def test_a_bad_timeout_names_the_argument(timeout):
    with pytest.raises(ValueError, match="init_distributed: timeout must be positive: a number of seconds or a timedelta"):
        comm.init_distributed(timeout=timeout)
    assert not comm.is_initialized()


@pytest.mark.parametrize("backend", ["bogus", "cpu:bogus", "", 3])
def test_an_unknown_backend_names_the_known_ones(backend):
    with pytest.raises(ValueError, match="is not a torch.distributed backend; known: gloo"):
        comm.init_distributed(backend=backend)
    assert not comm.is_initialized()


def test_a_device_mapped_backend_string_is_accepted():
    info = comm.init_distributed(backend="cpu:gloo")
    try:
        assert info.world_size == 1
    finally:
        comm.destroy()
