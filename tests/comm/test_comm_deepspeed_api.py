"""deepspeed.comm drop-in: DeepSpeed's signatures (0.19.5), its call shapes in a real 2-process gloo world,
and init_distributed's DeepSpeed arguments."""
import inspect
import logging
import os
import sys
import time
from datetime import timedelta

import pytest

from accelops import comm
from accelops.comm import DistributedInitError
from comm_workers import parse, run_ranks
from helpers import free_port

_DS = object()  # DeepSpeed's `debug=get_caller_func()` default: evaluated at import there, ignored here

# Parameter names and defaults of deepspeed/comm/comm.py at v0.19.5 (no comms-logger keywords where it has none).
DEEPSPEED_SIGNATURES = {
    "init_distributed": [("dist_backend", None), ("auto_mpi_discovery", True), ("distributed_port", 29500),
                         ("verbose", True), ("timeout", None), ("init_method", None), ("dist_init_required", None),
                         ("config", None), ("rank", -1), ("world_size", -1)],
    "all_reduce": [("tensor",), ("op", "SUM"), ("group", None), ("async_op", False), ("prof", False),
                   ("log_name", "all_reduce"), ("debug", _DS)],
    "reduce": [("tensor",), ("dst",), ("op", "SUM"), ("group", None), ("async_op", False), ("prof", False),
               ("log_name", "reduce"), ("debug", _DS)],
    "broadcast": [("tensor",), ("src",), ("group", None), ("async_op", False), ("prof", False),
                  ("log_name", "broadcast"), ("debug", _DS)],
    "all_gather": [("tensor_list",), ("tensor",), ("group", None), ("async_op", False), ("prof", False),
                   ("log_name", "all_gather"), ("debug", _DS)],
    "all_gather_into_tensor": [("output_tensor",), ("tensor",), ("group", None), ("async_op", False),
                               ("prof", False), ("log_name", "all_gather_into_tensor"), ("debug", _DS)],
    "reduce_scatter": [("output",), ("input_list",), ("op", "SUM"), ("group", None), ("async_op", False),
                       ("prof", False), ("log_name", "reduce_scatter"), ("debug", _DS)],
    "reduce_scatter_tensor": [("output_tensor",), ("tensor",), ("op", "SUM"), ("group", None), ("async_op", False),
                              ("prof", False), ("log_name", "reduce_scatter_tensor"), ("debug", _DS)],
    "all_to_all_single": [("output",), ("tensor",), ("output_split_sizes", None), ("input_split_sizes", None),
                          ("group", None), ("async_op", False), ("prof", False), ("log_name", "all_to_all_single"),
                          ("debug", _DS)],
    "all_to_all": [("output_tensor_list",), ("input_tensor_list",), ("group", None), ("async_op", False)],
    "gather": [("tensor",), ("gather_list", None), ("dst", 0), ("group", None), ("async_op", False),
               ("prof", False), ("log_name", "gather"), ("debug", _DS)],
    "scatter": [("tensor",), ("scatter_list", None), ("src", 0), ("group", None), ("async_op", False),
                ("prof", False), ("log_name", "scatter"), ("debug", _DS)],
    "all_gather_object": [("object_list",), ("obj",), ("group", None), ("prof", False),
                          ("log_name", "all_gather_object"), ("debug", _DS)],
    "broadcast_object_list": [("object_list",), ("src",), ("group", None), ("device", None)],
    "send": [("tensor",), ("dst",), ("group", None), ("tag", 0), ("prof", False), ("log_name", "send"),
             ("debug", _DS)],
    "recv": [("tensor",), ("src", None), ("group", None), ("tag", 0), ("prof", False), ("log_name", "recv"),
             ("debug", _DS)],
    "isend": [("tensor",), ("dst",), ("group", None), ("tag", 0), ("prof", False), ("log_name", "isend"),
              ("debug", _DS)],
    "irecv": [("tensor",), ("src", None), ("group", None), ("tag", 0), ("prof", False), ("log_name", "irecv"),
              ("debug", _DS)],
    "barrier": [("group", None), ("async_op", False), ("device_ids", None), ("prof", False), ("log_name", "barrier"),
                ("debug", _DS)],
    "monitored_barrier": [("group", None), ("timeout", None), ("wait_all_ranks", False), ("prof", False),
                          ("log_name", "monitored_barrier"), ("debug", _DS)],
    "new_group": [("ranks",)],
    "get_rank": [("group", None)],
    "get_world_size": [("group", None)],
    "get_local_rank": [],
    "get_global_rank": [("group", None), ("group_rank", 0)],
    "get_world_group": [],
    "is_initialized": [],
    "destroy_process_group": [("group", None)],
}


@pytest.mark.parametrize("name", sorted(DEEPSPEED_SIGNATURES))
def test_signature_matches_deepspeed(name):
    params = [p for p in inspect.signature(getattr(comm, name)).parameters.values()
              if p.kind is p.POSITIONAL_OR_KEYWORD]
    expected = DEEPSPEED_SIGNATURES[name]
    assert [p.name for p in params] == [e[0] for e in expected]
    for param, spec in zip(params, expected):
        if len(spec) == 1:
            assert param.default is param.empty, param.name
        elif spec[1] == "SUM":
            assert param.default is comm.ReduceOp.SUM
        elif spec[1] is not _DS:
            assert param.default == spec[1] and type(param.default) is type(spec[1]), param.name


def test_reduce_op_has_deepspeeds_members_and_values():
    assert {op.name: op.value for op in comm.ReduceOp} == {
        "SUM": 0, "PRODUCT": 1, "MIN": 2, "MAX": 3, "BAND": 4, "BOR": 5, "BXOR": 6, "AVG": 7, "UNUSED": 8}


def test_deepspeed_call_shapes_on_two_gloo_processes(tmp_path):
    n, port, tcp_port = 2, free_port(), free_port()
    results = parse(run_ranks(n, "deepspeed_api", lambda r: {
        "DSAPI_RANK": r, "DSAPI_WORLD_SIZE": n, "DSAPI_PORT": port, "MASTER_ADDR": "127.0.0.1",
        "COMM_TEST_DIR": tmp_path, "COMM_TEST_TCP_PORT": tcp_port}, timeout_s=120))
    for rank, res in enumerate(results):
        assert res["before"] == [False, 0, 1]
        # rank/world_size arguments beat the (absent) launcher; distributed_port is the master port.
        assert res["info"] == {"rank": rank, "world_size": n, "local_rank": 0, "backend": "gloo",
                               "init_method": "env://", "source": "args"}
        assert res["exported"] == {"RANK": str(rank), "WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": str(port)}
        assert res["helpers"] == [rank, n, 0, True]
        assert res["not_required_again_same"] is True
        assert res["all_reduce"] == [3.0, -1.0]
        assert res["all_reduce_ds_max"] == 1.0
        assert res["all_reduce_torch_min_async"] == 5.0
        assert "op must be a ReduceOp member" in res["bad_op"] and "'sum'" in res["bad_op"]
        assert res["broadcast"] == [1.0, 1.0]
        assert res["broadcast_async"] == [3.0, 3.0]
        assert res["all_gather"] == [[0.0, 10.0], [1.0, 11.0]]
        assert res["all_gather_into_tensor"] == [0.0, 10.0, 1.0, 11.0]
        assert res["reduce_scatter_tensor"] == [2.0 * rank + 100.0]  # sum over src of (rank + 100 src)
        assert res["deprecation_warnings"] == []  # torch 2.13's *_single names are used where present
        other = 1 - rank
        expected = {rank: [100.0 * rank + rank] * (2 * rank + 1), other: [100.0 * other + rank] * (other + rank + 1)}
        assert res["all_to_all_single_uneven"] == expected[0] + expected[1]
        assert res["all_to_all_single_even"] == [float(rank), 10.0 + rank]
        assert res["all_to_all"] == [float(rank), 100.0 + rank]
        assert res["reduce_on_0"] == (3.0 if rank == 0 else None)
        assert res["reduce_scatter"] == 100.0 + 2 * rank
        assert res["gather_on_0"] == ([0.0, 3.0] if rank == 0 else None)
        assert res["scatter"] == 10.0 * rank
        assert res["all_gather_object"] == [{"rank": 0}, {"rank": 1}]
        assert res["broadcast_object_list"] == [{"from": 0}, 0]
        assert res["send_recv"] == [other + 0.5, other]  # recv(src=None) returns the sender
        assert res["send_recv_tagged"] == other + 0.25
        assert res["isend_irecv_handles"] == [True, True]  # waitable handles, not DeepSpeed 0.19.5's None/int
        assert res["isend_irecv"] == 7.0 * other
        assert res["marker_after_barrier"] is True
        assert res["group_rank_in_last"] == (0 if rank == 1 else -1)
        assert res["global_rank_of_last_0"] == (1 if rank == 1 else None)
        assert res["global_rank_default_group"] == 1
        assert res["world_group_is_torch_world"] is True
        assert res["world_size_of_everyone"] == 2
        assert res["product_in_group"] == 6.0
        assert res.get("sum_in_group_of_one") == (42.0 if rank == 1 else None)
        assert res["still_initialized_after_subgroup_destroy"] is True
        assert res["after_destroy"] == [False, 0, 1]
        # The first init exported RANK/WORLD_SIZE, which agree with the arguments: the launcher source stands.
        assert res["tcp"] == [f"tcp://127.0.0.1:{tcp_port}", "torchrun", 3.0]


# --------------------------------------------------------------------------- one process: init_distributed arguments
in_clean_env = pytest.mark.usefixtures("world_of_one")


@in_clean_env
def test_collectives_before_init_raise_torchs_error_and_helpers_answer_for_one_process():
    import torch

    assert (comm.get_rank(), comm.get_world_size(), comm.get_local_rank()) == (0, 1, 0)
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        comm.all_reduce(torch.ones(1))
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        comm.barrier()


@in_clean_env
def test_backend_alias_and_its_conflict():
    with pytest.raises(ValueError, match=r"dist_backend='gloo' and backend='nccl' disagree"):
        comm.init_distributed(dist_backend="gloo", backend="nccl")
    assert not comm.is_initialized()
    info = comm.init_distributed(dist_backend="gloo", backend="gloo", verbose=False)
    assert (info.backend, info.source) == ("gloo", "single")


@in_clean_env
@pytest.mark.parametrize("kwargs,message", [
    ({"distributed_port": 0}, "distributed_port must be a TCP port (1-65535), got 0"),
    ({"distributed_port": 70000}, "distributed_port must be a TCP port"),
    ({"distributed_port": "29500"}, "distributed_port must be a TCP port"),
    ({"distributed_port": True}, "distributed_port must be a TCP port"),
    ({"rank": -2}, "rank must be an int >= 0, or -1"),
    ({"rank": 0.0}, "rank must be an int >= 0, or -1"),
    ({"world_size": 0}, "world_size must be an int >= 1, or -1"),
    ({"world_size": "2"}, "world_size must be an int >= 1, or -1"),
    ({"auto_mpi_discovery": "no"}, "auto_mpi_discovery must be True or False, got 'no'"),
    ({"verbose": 1}, "verbose must be True or False, got 1"),
    ({"dist_init_required": "yes"}, "dist_init_required must be True or False or None"),
    ({"rank": 1}, "rank=1 must be less than world size 1 (no launcher variables)"),
    ({"rank": 2, "world_size": 2}, "rank=2 must be less than world_size=2"),
])
def test_bad_deepspeed_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match="init_distributed: " + message.replace("(", r"\(").replace(")", r"\)")):
        comm.init_distributed(**kwargs)
    assert not comm.is_initialized()


@in_clean_env
def test_rank_arguments_override_the_launcher_and_are_exported():
    os.environ.update(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    info = comm.init_distributed(rank=0, world_size=1, verbose=False)
    assert info == comm.DistributedInfo(rank=0, world_size=1, local_rank=1, backend="gloo", init_method="local",
                                        source="args")
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("0", "1")
    assert (comm.get_rank(), comm.get_world_size()) == (0, 1)


@in_clean_env
def test_a_world_size_argument_without_master_addr_is_an_error():
    with pytest.raises(DistributedInitError, match="MASTER_ADDR not set: world size 2 from the rank/world_size "
                                                   "arguments needs MASTER_ADDR"):
        comm.init_distributed(rank=0, world_size=2, timeout=5)
    assert not comm.is_initialized()


def _timed_out_at(**kwargs):
    start = time.monotonic()
    with pytest.raises(DistributedInitError, match="timed out waiting for peers: 1 of 2 ranks joined") as err:
        comm.init_distributed(**kwargs)
    return str(err.value), time.monotonic() - start


@in_clean_env
def test_distributed_port_is_the_master_port_for_rank_arguments():
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    port = free_port()
    msg, _ = _timed_out_at(rank=0, world_size=2, distributed_port=port, timeout=1)
    assert f"127.0.0.1:{port}" in msg


@in_clean_env
def test_distributed_port_is_the_master_port_of_a_single_host_mpi_job(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if absent; never MPI_Init in the test process
    os.environ.update(OMPI_COMM_WORLD_RANK="0", OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_LOCAL_SIZE="2")
    port = free_port()
    msg, _ = _timed_out_at(distributed_port=port, timeout=1)
    assert f"127.0.0.1:{port}" in msg and "OMPI_COMM_WORLD_SIZE='2'" in msg


@in_clean_env
def test_deepspeed_timeout_variable_sets_the_default_timeout():
    os.environ.update(RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
                      DEEPSPEED_TIMEOUT="0.03")  # minutes: 1.8 s
    msg, waited = _timed_out_at()
    assert "joined after 1.8" in msg and 1.7 < waited < 10
    os.environ["DEEPSPEED_TIMEOUT"] = "soon"
    with pytest.raises(ValueError, match="DEEPSPEED_TIMEOUT must be a positive number of minutes, got 'soon'"):
        comm.init_distributed()


@in_clean_env
def test_default_timeout_is_deepspeeds_30_minutes():
    from accelops.comm.init import _as_timedelta

    os.environ.pop("DEEPSPEED_TIMEOUT", None)
    assert _as_timedelta(None) == timedelta(minutes=30)
    os.environ["DEEPSPEED_TIMEOUT"] = "10"
    assert _as_timedelta(None) == timedelta(minutes=10)
    assert _as_timedelta(7) == timedelta(seconds=7)  # an explicit timeout wins


@in_clean_env
def test_dist_init_required_false_initialises_nothing():
    with pytest.raises(DistributedInitError, match=r"dist_init_required=False\): torch.distributed is not "
                                                   "initialised"):
        comm.init_distributed(dist_init_required=False)
    assert not comm.is_initialized()
    info = comm.init_distributed(dist_init_required=True, verbose=False)
    assert comm.init_distributed(dist_init_required=False) is info
    assert comm.init_distributed(dist_init_required=True) is info  # already initialised: not again


@in_clean_env
def test_auto_mpi_discovery_false_ignores_mpi_variables():
    os.environ.update(OMPI_COMM_WORLD_RANK="0", OMPI_COMM_WORLD_SIZE="1", OMPI_COMM_WORLD_LOCAL_RANK="0")
    info = comm.init_distributed(auto_mpi_discovery=False, verbose=False)
    assert info.source == "single" and "RANK" not in os.environ  # nothing read from MPI, nothing exported
    comm.destroy()
    os.environ.update(OMPI_COMM_WORLD_RANK="1", OMPI_COMM_WORLD_SIZE="2")
    with pytest.raises(DistributedInitError, match="auto_mpi_discovery=False: the MPI variables are not used") as err:
        comm.init_distributed(auto_mpi_discovery=False)
    assert "every process would be a world of one" in str(err.value)
    assert not comm.is_initialized()


@in_clean_env
def test_auto_mpi_discovery_false_keeps_torchrun_variables_and_skips_their_mpi_check():
    # With MPI discovery on, these disagree (an error); with it off only torchrun's count.
    os.environ.update(RANK="0", WORLD_SIZE="1", OMPI_COMM_WORLD_RANK="1", OMPI_COMM_WORLD_SIZE="2")
    with pytest.raises(DistributedInitError, match="conflicting launcher variables"):
        comm.init_distributed()
    assert comm.init_distributed(auto_mpi_discovery=False, verbose=False).source == "torchrun"


@in_clean_env
@pytest.mark.parametrize("verbose", [True, False])
def test_verbose_logs_one_line_on_rank_0(caplog, verbose):
    with caplog.at_level(logging.INFO, logger="accelops.comm"):
        comm.init_distributed(verbose=verbose)
        comm.init_distributed(verbose=verbose)  # already initialised: no second line
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("accelops.comm")]
    assert lines == (["initialised torch.distributed: world size 1, backend gloo, init_method local, "
                      "ranks from single"] if verbose else [])


class _DeepSpeedConfigLike:
    class comms_config:  # noqa: N801 - the attribute path DeepSpeed reads
        comms_logger_enabled = True


@in_clean_env
@pytest.mark.parametrize("config", [_DeepSpeedConfigLike(), {"comms_logger": {"enabled": True}}])
def test_config_asking_for_comms_logging_warns(config):
    with pytest.warns(UserWarning, match="config enables comms_logger, which accelops does not implement"):
        info = comm.init_distributed(config=config, verbose=False)
    assert info.world_size == 1


@in_clean_env
def test_config_without_comms_logging_is_accepted_silently(recwarn):
    comm.init_distributed(config={"train_batch_size": 8, "comms_logger": {"enabled": False}}, verbose=False)
    assert [str(w.message) for w in recwarn if "comms_logger" in str(w.message)] == []


@in_clean_env
def test_destroy_process_group_forgets_the_cached_info():
    info = comm.init_distributed(verbose=False)
    comm.destroy_process_group()
    assert not comm.is_initialized()
    again = comm.init_distributed(verbose=False)
    assert again == info and again is not info  # a fresh init, not the stale cache


@in_clean_env
def test_unused_reduce_op_is_rejected_naming_op():
    import torch

    comm.init_distributed(verbose=False)
    with pytest.raises(ValueError, match="op must be a ReduceOp member .* got <ReduceOp.UNUSED: 8>"):
        comm.all_reduce(torch.ones(1), op=comm.ReduceOp.UNUSED)
    t = torch.tensor([3.0])
    comm.all_reduce(t, op=comm.ReduceOp.AVG)
    assert t.item() == 3.0
