"""--include/--exclude parsing and node/slot selection."""
from collections import OrderedDict

import pytest

from accelops.launcher import LaunchError
from accelops.launcher.resources import parse_filter, select

POOL = OrderedDict([("worker-0", 4), ("worker-1", 4), ("worker-2", 2), ("worker-3", 2)])


def test_parse_filter_deepspeed_syntax():
    assert parse_filter("worker-2:0@worker-3:0,1") == {"worker-2": [0], "worker-3": [0, 1]}
    assert parse_filter("worker-0@worker-1:2,0") == {"worker-0": [], "worker-1": [0, 2]}
    assert parse_filter("a:1@a:0") == {"a": [0, 1]}
    assert parse_filter("a@a:0") == {"a": []}
    assert parse_filter("localhost:1") == {"localhost": [1]}


@pytest.mark.parametrize("spec, message", [
    ("", "--include is empty"),
    ("@worker-0", "names no host"),
    ("worker-0:", "slot '' of host 'worker-0' is not a non-negative integer"),
    ("worker-0:x", "slot 'x'"),
    ("worker-0:-1", "slot '-1'"),
])
def test_parse_filter_errors(spec, message):
    with pytest.raises(LaunchError, match=message):
        parse_filter(spec, "--include")


def test_include_keeps_pool_order_and_sorted_slots():
    got = select(POOL, include="worker-3:1,0@worker-1")
    assert list(got.items()) == [("worker-1", [0, 1, 2, 3]), ("worker-3", [0, 1])]


def test_exclude_slots_and_whole_hosts():
    got = select(POOL, exclude="worker-0@worker-1:0,3")
    assert list(got.items()) == [("worker-1", [1, 2]), ("worker-2", [0, 1]), ("worker-3", [0, 1])]


def test_num_nodes_and_num_gpus():
    assert list(select(POOL, num_nodes=2).items()) == [("worker-0", [0, 1, 2, 3]), ("worker-1", [0, 1, 2, 3])]
    assert list(select(POOL, num_gpus=2).values()) == [[0, 1]] * 4
    assert list(select(POOL, num_nodes=1, num_gpus=3).items()) == [("worker-0", [0, 1, 2])]
    assert select(POOL, include="worker-1", num_nodes=-1, num_gpus=-1) == {"worker-1": [0, 1, 2, 3]}  # DeepSpeed's unset


def test_cpu_host_may_have_more_ranks_than_slots():
    assert list(select({"localhost": 1}, num_gpus=3, allow_oversubscribe=True).items()) == [("localhost", [0, 1, 2])]


@pytest.mark.parametrize("kwargs, message", [
    (dict(include="worker-0", exclude="worker-1"), "--include and --exclude exclude each other"),
    (dict(include="worker-9"), "--include: host 'worker-9' is not in the resource pool"),
    (dict(exclude="worker-9:0"), "--exclude: host 'worker-9' is not in the resource pool"),
    (dict(include="worker-2:2"), "--include: host 'worker-2' has no slot 2 \\(it has 2 slots: 0..1\\)"),
    (dict(exclude="worker-0:7"), "--exclude: host 'worker-0' has no slot 7"),
    (dict(include="worker-0", num_gpus=1), "cannot be combined with --num_nodes/--num_gpus"),
    (dict(exclude="worker-0", num_nodes=1), "cannot be combined with --num_nodes/--num_gpus"),
    (dict(num_nodes=5), "--num_nodes 5 is larger than the resource pool: 4 host"),
    (dict(num_nodes=0), "--num_nodes must be at least 1, got 0"),
    (dict(num_gpus=0), "--num_gpus must be at least 1, got 0"),
    (dict(num_gpus=3), "--num_gpus 3 is more than host 'worker-2' has: 2 slot"),
    (dict(exclude="worker-0@worker-1@worker-2@worker-3"), "leaves no slot to run on"),
])
def test_selection_errors(kwargs, message):
    with pytest.raises(LaunchError, match=message):
        select(POOL, **kwargs)
