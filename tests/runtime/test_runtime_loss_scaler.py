"""fp16 loss scaling as DeepSpeed's DynamicLossScaler: overflow skip, growth after the window, hysteresis,
the minimum, static scaling, and one overflow decision on every rank."""
import json
import os
import subprocess
import sys

import pytest
import torch

from accelops.runtime import ConfigError, load_config
from accelops.runtime.loss_scaler import (DynamicLossScaler, LossScaleAtMinimumError, LossScaler, agree_on_overflow,
                                          create_loss_scaler, has_overflow)
from helpers import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dynamic(init=16.0, window=3, min_scale=1.0, hysteresis=1, consecutive=False, raise_at_min=True):
    return DynamicLossScaler(init_scale=init, scale_window=window, min_scale=min_scale, delayed_shift=hysteresis,
                             consecutive_hysteresis=consecutive, raise_error_at_min_scale=raise_at_min)


def run(scaler, overflows):
    """The scale after each step; also checks update() reports the skip."""
    scales = []
    for overflow in overflows:
        assert scaler.update(overflow) is overflow
        scales.append(scaler.loss_scale)
    return scales


# ---------------------------------------------------------------- dynamic scaling


def test_growth_after_the_window():
    # (cur_iter - last_overflow_iter - 1) must be a positive multiple of the window: from the start
    # (last_overflow_iter -1) that is cur_iter 3, 6, 9: the 4th, 7th, 10th overflow-free step.
    assert run(dynamic(window=3), [False] * 10) == [16, 16, 16, 32, 32, 32, 64, 64, 64, 128]


def test_overflow_skips_and_halves_then_the_window_restarts():
    scaler = dynamic(window=3)
    assert run(scaler, [False, True, False, False, False, False, False]) == [16, 8, 8, 8, 8, 16, 16]
    assert (scaler.cur_iter, scaler.last_overflow_iter) == (7, 1)


def test_hysteresis_delays_the_halving():
    # hysteresis 2: the first overflow only uses up the counter; later ones halve (the counter stays at 1)
    scaler = dynamic(init=64.0, window=100, hysteresis=2)
    assert run(scaler, [True, True, True, False, True]) == [64, 32, 16, 16, 8]
    assert scaler.cur_hysteresis == 1


def test_hysteresis_refills_at_growth_without_consecutive_hysteresis():
    scaler = dynamic(init=64.0, window=2, hysteresis=2)
    # overflow at iter 0 (counter 2 -> 1), growth at iter 3 refills it, so the overflow at iter 4 is absorbed
    assert run(scaler, [True, False, False, False, True, True]) == [64, 64, 64, 128, 128, 64]


def test_consecutive_hysteresis_refills_after_every_good_step():
    alternating = [True, False] * 4
    assert run(dynamic(init=64.0, window=100, hysteresis=2, consecutive=True), alternating) == [64] * 8
    assert run(dynamic(init=64.0, window=100, hysteresis=2, consecutive=False), alternating) == [
        64, 64, 32, 32, 16, 16, 8, 8]


def test_never_below_the_minimum_then_an_error():
    scaler = dynamic(init=12.0, min_scale=4.0)
    assert run(scaler, [True, True]) == [6, 4]
    with pytest.raises(LossScaleAtMinimumError, match="already at its minimum 4.0"):
        scaler.update(True)
    assert (scaler.cur_iter, scaler.loss_scale) == (2, 4)  # as DeepSpeed: raised before recording the step
    tolerant = dynamic(init=8.0, min_scale=4.0, raise_at_min=False)
    assert run(tolerant, [True, True, True, False]) == [4, 4, 4, 4]


def test_state_dict_round_trip_continues_identically():
    pattern = [False, True, True, False, False, False, True, False, False, False, False, False]
    reference = dynamic(init=2.0 ** 10, window=2, hysteresis=2)
    expected = run(reference, pattern)
    first = dynamic(init=2.0 ** 10, window=2, hysteresis=2)
    run(first, pattern[:5])
    resumed = dynamic(init=2.0 ** 10, window=2, hysteresis=2)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert run(resumed, pattern[5:]) == expected[5:]
    with pytest.raises(ConfigError, match="state_dict must be a dict holding 'cur_iter'"):
        resumed.load_state_dict({"cur_scale": 4.0})


# ---------------------------------------------------------------- static scaling and the config


def test_static_scale_never_changes_but_overflows_still_skip():
    scaler = LossScaler(128.0)
    assert not scaler.dynamic and scaler.scale_loss(torch.tensor(2.0)).item() == 256.0
    assert run(scaler, [False, True, True, False]) == [128.0] * 4
    scaler.load_state_dict(LossScaler(4.0).state_dict())
    assert scaler.loss_scale == 4.0


def test_create_loss_scaler_from_the_config():
    guide = {"train_batch_size": 8, "fp16": {"enabled": True}}
    scaler = create_loss_scaler(load_config(guide, 1).fp16)
    assert isinstance(scaler, DynamicLossScaler)
    assert (scaler.loss_scale, scaler.scale_window, scaler.min_scale, scaler.delayed_shift,
            scaler.consecutive_hysteresis, scaler.raise_error_at_min_scale) == (65536.0, 1000, 1, 2, False, True)
    custom = create_loss_scaler(load_config({**guide, "fp16": {
        "enabled": True, "initial_scale_power": 5, "loss_scale_window": 7, "hysteresis": 3,
        "consecutive_hysteresis": True, "min_loss_scale": 2}}, 1).fp16)
    assert (custom.loss_scale, custom.scale_window, custom.min_scale, custom.delayed_shift,
            custom.consecutive_hysteresis) == (32.0, 7, 2, 3, True)
    static = create_loss_scaler(load_config({**guide, "fp16": {"enabled": True, "loss_scale": 512}}, 1).fp16)
    assert type(static) is LossScaler and static.loss_scale == 512.0
    off = create_loss_scaler(load_config({**guide, "fp16": {"enabled": False}, "bf16": {"enabled": True}}, 1).fp16)
    assert type(off) is LossScaler and off.loss_scale == 1.0


@pytest.mark.parametrize("make, expected", [
    (lambda: dynamic(window=0), "scale_window must be an integer >= 1, got 0"),
    (lambda: dynamic(min_scale=0), "min_scale must be a finite number > 0, got 0"),
    (lambda: dynamic(hysteresis=0), "delayed_shift must be an integer >= 1, got 0"),
    (lambda: dynamic(init=2.0, min_scale=4.0), "init_scale 2.0 is below min_scale 4.0"),
    (lambda: dynamic(consecutive=None), "consecutive_hysteresis must be true or false"),
    (lambda: LossScaler(0), "scale must be a finite number > 0, got 0"),
    (lambda: LossScaler(float("inf")), "scale must be a finite number > 0, got inf"),
])
def test_bad_scaler_arguments(make, expected):
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value).startswith(expected)


# ---------------------------------------------------------------- overflow detection


def test_has_overflow_on_parameters_and_gradients():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, dtype=torch.float16))
    assert has_overflow([a, b]) is False  # no grads yet
    a.grad = torch.tensor([1.0, 2.0, 3.0])
    assert has_overflow([a, b, None]) is False
    b.grad = torch.tensor([1.0, float("inf")], dtype=torch.float16)
    assert has_overflow([a, b]) is True
    assert has_overflow([torch.tensor([0.0, float("nan")])]) is True
    assert has_overflow([torch.tensor([-float("inf")], dtype=torch.bfloat16)]) is True
    assert has_overflow([torch.full((4,), 60000.0, dtype=torch.float16)]) is False  # large but finite
    sparse = torch.sparse_coo_tensor([[0, 2]], [1.0, float("inf")], (4,), check_invariants=True)
    assert has_overflow([sparse]) is True
    assert has_overflow([torch.empty(0)]) is False and has_overflow([]) is False
    with pytest.raises(TypeError, match="has_overflow takes parameters or gradient tensors, got a float"):
        has_overflow([1.0])


def test_agree_on_overflow():
    assert agree_on_overflow(True) is True and agree_on_overflow(torch.tensor(False)) is False

    def ranks(*flags):  # a stand-in for all_reduce(MAX): the other ranks' findings
        return lambda mine: max([mine, *flags])

    assert agree_on_overflow(False, ranks(0.0, 1.0)) is True
    assert agree_on_overflow(False, ranks(0.0, 0.0)) is False
    assert agree_on_overflow(True, ranks(0.0)) is True
    assert agree_on_overflow(False, lambda mine: torch.tensor([1.0])) is True
    with pytest.raises(TypeError, match="all_reduce_max must return the maximum as a number"):
        agree_on_overflow(False, lambda mine: None)


def test_an_overflowing_step_is_skipped_in_a_training_loop():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = dynamic(init=2.0 ** 8, window=2, hysteresis=1)
    x = torch.randn(8, 4)
    for step, poison in enumerate([False, True, False]):
        before = [p.detach().clone() for p in model.parameters()]
        scaler.scale_loss(model(x).pow(2).mean()).backward()
        if poison:
            model.weight.grad[0, 0] = float("inf")
        scale = scaler.loss_scale  # the scale the gradients carry
        if not scaler.update(has_overflow(model.parameters())):
            for p in model.parameters():
                p.grad.div_(scale)
            optimizer.step()
        optimizer.zero_grad()
        changed = any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
        assert changed is not poison, f"step {step}"
    assert scaler.loss_scale == 2.0 ** 7


# ---------------------------------------------------------------- every rank decides alike

RANK_SCRIPT = r"""
import datetime, json, os, sys
import torch.distributed as dist
from accelops.runtime.loss_scaler import DynamicLossScaler, torch_all_reduce_max
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
local = [[False, True, False, False, False, False], [False, False, False, True, False, False]][rank]
scaler = DynamicLossScaler(init_scale=1024.0, scale_window=2, min_scale=1.0, delayed_shift=2,
                           consecutive_hysteresis=False)
reduce_max = torch_all_reduce_max()
skips = [scaler.update(flag, reduce_max) for flag in local]
print(json.dumps({"skips": skips, "state": scaler.state_dict()}))
dist.destroy_process_group()
"""


def test_two_ranks_with_different_local_overflows_decide_alike():
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert results[0] == results[1]
    assert results[0]["skips"] == [False, True, False, True, False, False]
    # overflow at iter 1 (hysteresis 2 -> 1), at iter 3 the scale halves; no growth yet (window 2 needs 3 good)
    assert results[0]["state"] == {"cur_scale": 512.0, "cur_iter": 6, "last_overflow_iter": 3, "cur_hysteresis": 1}
