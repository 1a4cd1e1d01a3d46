"""DeepSpeed's ``deepspeed.utils`` / ``deepspeed.runtime.utils`` / ``deepspeed.ops`` names and the package's
subpackage attributes: what ``import accelops as deepspeed`` gives a script.

``safe_get_full_*`` / ``safe_set_full_*`` are tested on a 2-rank engine in tests/runtime/test_utils_full_state.py.
"""
import json
import logging
import os
import random
import socket
import subprocess
import sys
import textwrap

import pytest

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _python(code, env=None, timeout=120):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _two_ranks(code, timeout=120):
    """Run ``code`` as rank 0 and rank 1 of a gloo world (``dist`` initialised before it runs); returns each
    rank's (stdout, stderr)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    prologue = "import torch.distributed as dist\ndist.init_process_group('gloo')\n"
    epilogue = "\ndist.barrier()\ndist.destroy_process_group()\n"
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
        env.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, "-c", prologue + textwrap.dedent(code) + epilogue], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for rank, proc in enumerate(procs):
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"rank {rank}: {err[-3000:]}"
            results.append((out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


# ---------------------------------------------------------------------------------------------- the package's attributes
def test_subpackages_are_attributes_of_a_fresh_import_and_import_stays_torch_free():
    out = _python("""
        import json, sys
        import accelops as deepspeed
        report = {"after_import": "torch" in sys.modules}
        mods = [deepspeed.comm, deepspeed.utils, deepspeed.runtime, deepspeed.ops, deepspeed.accelerator]
        report["modules"] = [m.__name__ for m in mods]
        report["after_attributes"] = "torch" in sys.modules
        report["in_dir"] = all(n in dir(deepspeed) for n in ("comm", "utils", "runtime", "ops", "accelerator"))
        report["checkpointing"] = [deepspeed.checkpointing.__name__, deepspeed.checkpointing.checkpoint.__name__]
        report["zero"] = [deepspeed.zero.__name__, deepspeed.zero.Init.__name__, deepspeed.zero.GatheredParameters.__name__]
        report["rank"] = deepspeed.comm.get_rank()
        report["seed"] = deepspeed.runtime.utils.set_random_seed.__module__
        report["loader"] = deepspeed.utils.RepeatingLoader.__module__
        report["groups"] = deepspeed.utils.groups._get_model_parallel_world_size()
        print(json.dumps(report))
    """)
    report = json.loads(out.stdout)
    assert report["after_import"] is False
    assert report["modules"] == ["accelops.comm", "accelops.utils", "accelops.runtime", "accelops.ops",
                                 "accelops.accelerator"]
    assert report["after_attributes"] is False  # the subpackages themselves import no torch
    assert report["in_dir"]
    assert report["checkpointing"] == ["accelops.runtime.activation_checkpointing.checkpointing", "checkpoint"]
    assert report["zero"] == ["accelops.runtime.zero", "Init", "GatheredParameters"]
    assert report["rank"] == 0
    assert report["seed"] == "accelops.runtime.utils"
    assert report["loader"] == "accelops.runtime.dataloader"
    assert report["groups"] == 1


def test_unknown_names_are_attribute_errors():
    import accelops
    import accelops.runtime
    import accelops.utils

    for module, name in ((accelops, "no_such_subpackage"), (accelops.utils, "no_such_name"),
                         (accelops.runtime, "no_such_module"), (accelops.runtime, "_private")):
        with pytest.raises(AttributeError, match=name):
            getattr(module, name)


# ---------------------------------------------------------------------------------------------- RepeatingLoader
def test_repeating_loader_starts_again_after_each_pass():
    import torch

    from accelops.utils import RepeatingLoader

    loader = torch.utils.data.DataLoader(list(range(5)), batch_size=2)
    repeating = RepeatingLoader(loader)
    assert iter(repeating) is repeating
    got = [next(repeating).tolist() for _ in range(7)]
    assert got == [[0, 1], [2, 3], [4], [0, 1], [2, 3], [4], [0, 1]]
    assert repeating.loader is loader


def test_repeating_loader_refuses_what_it_cannot_repeat():
    from accelops.utils import RepeatingLoader

    with pytest.raises(TypeError, match="iterable loader, got a int"):
        RepeatingLoader(3)
    empty = RepeatingLoader([])
    with pytest.raises(ValueError, match="yielded nothing"):
        next(empty)


# ---------------------------------------------------------------------------------------------- log_dist and logger
def test_log_dist_without_a_process_group_logs_with_rank_minus_one(caplog):
    from accelops.utils import log_dist, logger

    assert logger is logging.getLogger("accelops")
    with caplog.at_level(logging.DEBUG, logger="accelops"):
        log_dist("hello", ranks=[0])
        log_dist("quiet", level=logging.DEBUG)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "[Rank -1] hello"), (logging.DEBUG, "[Rank -1] quiet")]
    with pytest.raises(TypeError, match="integer ranks"):
        log_dist("x", ranks=["0"])


def test_log_dist_logs_on_the_given_ranks_only():
    code = """
        import logging
        from accelops.utils import log_dist
        log_dist("only-one", ranks=[1])
        log_dist("both", ranks=[0, 1])
        log_dist("every", ranks=[-1], level=logging.WARNING)
        log_dist("none")
        log_dist("none-empty", ranks=[])
    """
    lines = [[line for line in err.splitlines() if line.startswith("[Rank")] for _, err in _two_ranks(code)]
    assert lines == [["[Rank 0] both", "[Rank 0] every"],
                     ["[Rank 1] only-one", "[Rank 1] both", "[Rank 1] every"]]


# ---------------------------------------------------------------------------------------------- groups
def test_groups_on_a_data_parallel_world_of_two():
    code = """
        import json, torch
        from accelops.utils import groups, get_model_parallel_group
        dp = groups._get_data_parallel_group()
        summed = torch.ones(1); dist.all_reduce(summed, group=dp)
        alone = torch.ones(1); dist.all_reduce(alone, group=get_model_parallel_group())
        try:
            groups._get_sequence_parallel_group()
            seq = None
        except KeyError as error:
            seq = str(error)
        print(json.dumps({
            "dp": [groups._get_data_parallel_world_size(), groups._get_data_parallel_rank(),
                   list(groups._get_data_parallel_group_ranks()), dist.get_global_rank(dp, 1),
                   groups.get_data_parallel_world_size(), groups.get_data_parallel_rank(),
                   groups._get_sequence_data_parallel_world_size(), groups._get_broadcast_src_rank()],
            "mp": [groups._get_model_parallel_world_size(), groups.get_model_parallel_world_size(),
                   groups.get_model_parallel_rank(), groups.get_tensor_model_parallel_src_rank(),
                   dist.get_world_size(get_model_parallel_group()), groups._get_sequence_parallel_world_size(),
                   groups._get_expert_model_parallel_world_size()],
            "same_group": groups.get_model_parallel_group() is groups.get_tensor_model_parallel_group(),
            "sums": [summed.item(), alone.item()], "seq": seq}))
    """
    for rank, (out, _) in enumerate(_two_ranks(code)):
        got = json.loads(out)
        assert got["dp"] == [2, rank, [0, 1], 1, 2, rank, 2, 0]
        assert got["mp"] == [1, 1, 0, rank, 1, 1, 1]
        assert got["same_group"]
        assert got["sums"] == [2.0, 1.0]  # the data-parallel group spans both ranks, the model-parallel one is alone
        assert "No sequence parallel group" in got["seq"]


def test_groups_before_initialisation_and_what_accelops_does_not_have():
    import torch.distributed as dist

    from accelops.utils import groups

    if dist.is_initialized():
        pytest.skip("a process group is left over from another test")
    assert (groups._get_data_parallel_world_size(), groups._get_data_parallel_rank()) == (1, 0)
    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        groups._get_data_parallel_group()
    groups.initialize()  # nothing to set up
    with pytest.raises(ValueError, match="no model parallelism"):
        groups.initialize(mpu=object())
    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        groups.initialize(ep_size=2)  # expert groups are process groups
    assert groups.mpu is None


# ---------------------------------------------------------------------------------------------- runtime.utils
def test_set_random_seed_seeds_random_numpy_and_torch():
    import numpy
    import torch

    from accelops.runtime.utils import set_random_seed

    def draw():
        return random.random(), float(numpy.random.rand()), torch.rand(3).tolist()

    set_random_seed(123)
    first = draw()
    set_random_seed(123)
    assert draw() == first
    set_random_seed(124)
    assert all(a != b for a, b in zip(draw(), first))
    set_random_seed(2 ** 70 + 123)  # larger than numpy and torch accept: reduced as DeepSpeed does
    assert draw()[1:] == first[1:]
    with pytest.raises(TypeError, match="integer"):
        set_random_seed("123")


def test_see_memory_usage_prints_only_when_forced(capsys, monkeypatch):
    from accelops.accelerator import get_accelerator
    from accelops.runtime.utils import see_memory_usage

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    see_memory_usage("not forced")
    assert capsys.readouterr().out == ""
    resets = []
    monkeypatch.setattr(type(get_accelerator()), "reset_peak_memory_stats", lambda self, i=None: resets.append(i))
    see_memory_usage("after the model", force=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "after the model"
    assert lines[1].startswith("MA ") and "Max_MA" in lines[1] and "Max_CA" in lines[1]
    assert lines[2].startswith("CPU Virtual Memory:  used = ")
    assert resets == [None]


# ---------------------------------------------------------------------------------------------- ops.__compatible_ops__
def test_compatible_ops_is_deepspeeds_table():
    import accelops.ops
    from accelops.op_builder import ALL_OPS, compatible_ops

    table = accelops.ops.__compatible_ops__
    assert set(table) == set(ALL_OPS) | {"deepspeed_not_implemented"}
    assert table["deepspeed_not_implemented"] is False
    assert all(type(v) is bool for v in table.values())
    assert {k: v for k, v in table.items() if k != "deepspeed_not_implemented"} == compatible_ops()
    assert accelops.ops.__compatible_ops__ is table  # computed once; edits persist, as in DeepSpeed
