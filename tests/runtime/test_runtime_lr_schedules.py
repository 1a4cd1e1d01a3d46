"""DeepSpeed's LR schedules, point by point against DeepSpeed's formulas written out here in closed form.

``i`` is ``last_batch_iteration``: -1 right after construction, then 0, 1, ... after each ``step()``.
The closed forms below are DeepSpeed's formulas (deepspeed/runtime/lr_schedules.py) restated per
iteration, not a copy of its code: W = max(2, warmup_num_steps); log warmup ln(i + 1) / ln(W), linear i / W.
"""
import math

import pytest
import torch

from accelops.runtime import ConfigError, load_config
from accelops.runtime.lr_schedules import (LRRangeTest, OneCycle, WarmupCosineLR, WarmupDecayLR, WarmupLR,
                                           build_scheduler)


def make_optimizer(kind="adam", lr=0.5, groups=1):
    params = [[torch.nn.Parameter(torch.zeros(2))] for _ in range(groups)]
    groups = [{"params": p} for p in params]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.Adam(groups, lr=lr)


def trajectory(scheduler, steps):
    """[(i, lr of group 0)] from construction (-1) through ``steps`` steps."""
    out = [(scheduler.last_batch_iteration, scheduler.get_last_lr()[0])]
    for _ in range(steps):
        scheduler.step()
        out.append((scheduler.last_batch_iteration, scheduler.optimizer.param_groups[0]["lr"]))
        assert scheduler.get_last_lr()[0] == out[-1][1]
    return out


def assert_trajectory(scheduler, steps, expected_fn):
    for i, lr in trajectory(scheduler, steps):
        assert lr == pytest.approx(expected_fn(i), rel=1e-12, abs=1e-15), f"at i={i}"


def warm(i, w, kind):
    w = max(2, w)
    return math.log(i + 1) / math.log(w) if kind == "log" else i / w


# ---------------------------------------------------------------- WarmupLR


@pytest.mark.parametrize("warmup_num_steps, kind", [(10, "log"), (10, "linear"), (1, "log"), (2, "linear"),
                                                    (7, "linear")])
def test_warmup_lr(warmup_num_steps, kind):
    lo, hi = 0.01, 0.11

    def expected(i):
        if i < 0:
            return lo
        if i < max(2, warmup_num_steps):
            return lo + (hi - lo) * warm(i, warmup_num_steps, kind)
        return hi

    scheduler = WarmupLR(make_optimizer(), warmup_min_lr=lo, warmup_max_lr=hi, warmup_num_steps=warmup_num_steps,
                         warmup_type=kind)
    assert_trajectory(scheduler, warmup_num_steps + 5, expected)
    assert scheduler.get_last_lr() == [hi]


def test_warmup_lr_defaults_use_the_optimizers_lr_as_max():
    scheduler = WarmupLR(make_optimizer(lr=0.3))  # min 0, max = group lr, W 1000, log
    assert (scheduler.min_lrs, scheduler.max_lrs, scheduler.warmup_num_steps, scheduler.warmup_type) == (
        [0.0], [0.3], 1000, "log")
    assert_trajectory(scheduler, 20, lambda i: 0.0 if i < 0 else 0.3 * math.log(i + 1) / math.log(1000))


# ---------------------------------------------------------------- WarmupDecayLR


@pytest.mark.parametrize("total, warmup, kind", [(20, 5, "linear"), (20, 5, "log"), (12, 10, "log"), (6, 1, "linear")])
def test_warmup_decay_lr(total, warmup, kind):
    lo, hi = 0.002, 0.02
    w = max(2, warmup)

    def expected(i):
        if i < 0:
            return lo
        if i < w:
            return lo + (hi - lo) * warm(i, warmup, kind)
        return lo + (hi - lo) * max(0.0, (total - i) / max(1, total - w))

    scheduler = WarmupDecayLR(make_optimizer(), total_num_steps=total, warmup_min_lr=lo, warmup_max_lr=hi,
                              warmup_num_steps=warmup, warmup_type=kind)
    assert_trajectory(scheduler, total + 4, expected)  # past total_num_steps: stays at warmup_min_lr
    assert scheduler.get_last_lr() == [pytest.approx(lo)]


def test_warmup_decay_lr_defaults_and_short_total():
    scheduler = WarmupDecayLR(make_optimizer(lr=0.7), total_num_steps=5000)
    assert (scheduler.min_lrs, scheduler.max_lrs, scheduler.warmup_num_steps) == ([0.0], [0.001], 1000)
    with pytest.warns(UserWarning, match="total_num_steps 5 is less than warmup_num_steps 10"):
        scheduler = WarmupDecayLR(make_optimizer(), total_num_steps=5, warmup_num_steps=10, warmup_max_lr=0.1,
                                  warmup_type="linear")
    # warmup runs to i = 9, then the decay term (5 - i) / max(1, 5 - 10) is already negative: 0
    assert_trajectory(scheduler, 12, lambda i: 0.0 if i < 0 else 0.1 * i / 10 if i < 10 else 0.0)


# ---------------------------------------------------------------- WarmupCosineLR


@pytest.mark.parametrize("total, warmup, kind, r0, rc", [(30, 10, "linear", 0.1, 0.01), (30, 10, "log", 0.0, 1e-4),
                                                         (8, 1, "linear", 0.5, 0.2), (10, 10, "log", 0.0, 0.05)])
def test_warmup_cosine_lr(total, warmup, kind, r0, rc):
    base = 0.4
    w = max(2, warmup)

    def expected(i):
        if i < 0:
            return 0.0
        if i < w:
            return base * (r0 + warm(i, warmup, kind) * (1 - r0))
        progress = min(1.0, (i - w + 1) / max(1, total - w))
        return base * max(0.0, rc + (1 - rc) * 0.5 * (1 + math.cos(math.pi * progress)))

    scheduler = WarmupCosineLR(make_optimizer(lr=base), total_num_steps=total, warmup_min_ratio=r0,
                               warmup_num_steps=warmup, cos_min_ratio=rc, warmup_type=kind)
    assert_trajectory(scheduler, total + 5, expected)
    assert scheduler.get_last_lr() == [pytest.approx(base * rc)]  # held at the floor after the end


def test_warmup_cosine_lr_defaults():
    scheduler = WarmupCosineLR(make_optimizer(lr=1.0), total_num_steps=2000)
    assert (scheduler.warmup_min_ratio, scheduler.warmup_num_steps, scheduler.cos_min_ratio,
            scheduler.warmup_type, scheduler.org_lrs) == (0.0, 1000, 0.0001, "log", [1.0])
    assert scheduler.get_last_lr() == [0.0]


# ---------------------------------------------------------------- OneCycle


def one_cycle_expected(i, lo, hi, s1, s2, k1=0, k2=0, decay_rate=0.0, decay_step=0):
    """lr at i: within the cycle, c = (i + 1) mod (s1 + s2) batches into it; rising c / s1 up to s1, then
    falling (s1 + s2 - c) / s2; with stairs, floor(position * k) / k. After the cycle (i >= s1 + s2):
    lo / (1 + rate * d / decay_step), d = i - (s1 + s2) + 1."""
    total = s1 + s2
    if i < total:
        c = (i + 1) % total
        if c <= s1:
            scale = (c * k1 // s1) / k1 if k1 else c / s1
        else:
            scale = ((total - c) * k2 // s2) / k2 if k2 else (total - c) / s2
        return lo + (hi - lo) * scale
    if decay_step == 0 or decay_rate == 0:
        return lo
    return lo / (1 + decay_rate * (i - total + 1) / decay_step)


@pytest.mark.parametrize("s1, s2, k1, k2, rate, decay_step", [
    (4, None, 0, None, 0.0, 0), (5, 3, 0, None, 0.5, 2), (6, 6, 3, None, 0.0, 0), (6, 4, 2, 4, 1.0, 3),
    (3, 0, 0, None, 0.2, 1)])
def test_one_cycle_lr(s1, s2, k1, k2, rate, decay_step):
    lo, hi = 0.01, 0.1
    scheduler = OneCycle(make_optimizer("sgd"), cycle_min_lr=lo, cycle_max_lr=hi, decay_lr_rate=rate,
                         cycle_first_step_size=s1, cycle_second_step_size=s2, cycle_first_stair_count=k1,
                         cycle_second_stair_count=k2, decay_step_size=decay_step, cycle_momentum=False)
    s2_ = s1 if s2 is None else s2
    k2_ = k1 if k2 is None else k2
    assert_trajectory(scheduler, s1 + s2_ + 6, lambda i: one_cycle_expected(i, lo, hi, s1, s2_, k1, k2_, rate,
                                                                            decay_step))


def test_one_cycle_momentum_cycles_betas0_and_sets_beta2_to_099():
    optimizer = make_optimizer("adam")
    scheduler = OneCycle(optimizer, 0.01, 0.1, cycle_first_step_size=4, cycle_second_step_size=2,
                         cycle_min_mom=0.8, cycle_max_mom=0.9, decay_step_size=2, decay_mom_rate=0.1,
                         decay_lr_rate=0.0)
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.99)  # construction: cycle_min_mom
    for _ in range(10):
        scheduler.step()
        i = scheduler.last_batch_iteration
        if i < 6:
            c = (i + 1) % 6
            scale = c / 4 if c <= 4 else (6 - c) / 2
            beta0 = 0.9 - (0.9 - 0.8) * scale
        else:
            beta0 = 0.9 * (1 + 0.1 * (i - 6 + 1) / 2)
        assert optimizer.param_groups[0]["betas"] == (pytest.approx(beta0, rel=1e-12), 0.99), f"at i={i}"


def test_one_cycle_without_betas_warns_and_keeps_momentum():
    optimizer = make_optimizer("sgd")
    with pytest.warns(UserWarning, match="cycle_momentum is off because SGD has no betas"):
        scheduler = OneCycle(optimizer, 0.01, 0.1)
    scheduler.step()
    assert not scheduler.cycle_momentum and scheduler.get_mom() is None
    assert optimizer.param_groups[0]["momentum"] == 0.9 and "betas" not in optimizer.param_groups[0]


# ---------------------------------------------------------------- LRRangeTest


@pytest.mark.parametrize("staircase", [False, True])
def test_lr_range_test(staircase):
    lo, size, rate = 1e-4, 3, 2.0

    def expected(i):
        interval = (i + 1) / size
        return lo * (1 + rate * (math.floor(interval) if staircase else interval))

    scheduler = LRRangeTest(make_optimizer(), lr_range_test_min_lr=lo, lr_range_test_step_size=size,
                            lr_range_test_step_rate=rate, lr_range_test_staircase=staircase)
    assert_trajectory(scheduler, 10, expected)


def test_lr_range_test_defaults():
    scheduler = LRRangeTest(make_optimizer())
    assert (scheduler.min_lr, scheduler.step_size, scheduler.step_rate, scheduler.staircase) == (
        [1e-3], 2000, 1.0, False)


# ---------------------------------------------------------------- common behaviour


def test_per_group_values_and_explicit_step_index():
    optimizer = make_optimizer(groups=2)
    scheduler = WarmupLR(optimizer, warmup_min_lr=[0.0, 0.1], warmup_max_lr=[1.0, 0.2], warmup_num_steps=4,
                         warmup_type="linear")
    scheduler.step(2)
    assert scheduler.get_last_lr() == [pytest.approx(0.5), pytest.approx(0.15)]
    assert [g["lr"] for g in optimizer.param_groups] == scheduler.get_last_lr()
    with pytest.raises(ConfigError, match="warmup_min_lr has 3 values, but the optimizer has 2 param groups"):
        WarmupLR(optimizer, warmup_min_lr=[0.0, 0.1, 0.2])


def test_state_dict_round_trip_resumes_the_trajectory():
    def fresh():
        return WarmupDecayLR(make_optimizer(), total_num_steps=30, warmup_max_lr=0.1, warmup_num_steps=5)

    reference = fresh()
    full = trajectory(reference, 20)
    first = fresh()
    for _ in range(8):
        first.step()
    state = first.state_dict()
    assert state == {"last_batch_iteration": 7}
    resumed = fresh()
    resumed.load_state_dict(state)
    assert resumed.last_batch_iteration == resumed.last_epoch == 7
    rest = [(resumed.step(), resumed.get_last_lr()[0])[1] for _ in range(12)]
    assert rest == [lr for _, lr in full[9:]]


def test_resumed_construction_leaves_lrs_alone():
    optimizer = make_optimizer(lr=0.25)
    scheduler = WarmupLR(optimizer, warmup_max_lr=1.0, warmup_num_steps=10, last_batch_iteration=4)
    assert scheduler.get_last_lr() == [0.25] and optimizer.param_groups[0]["lr"] == 0.25
    scheduler.step()
    assert scheduler.get_last_lr() == [pytest.approx(math.log(6) / math.log(10))]


def test_tensor_lr_is_filled_in_place():
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam([param], lr=torch.tensor(0.5))
    lr_tensor = optimizer.param_groups[0]["lr"]
    scheduler = WarmupCosineLR(optimizer, total_num_steps=10, warmup_num_steps=2, warmup_type="linear")
    scheduler.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(0.5 * 1 / 2)


def test_works_with_a_real_training_loop_and_a_wrapped_optimizer():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)

    class Wrapper:  # DeepSpeed also accepts an object holding the optimizer as .optimizer
        def __init__(self, inner):
            self.optimizer = inner

    scheduler = WarmupLR(Wrapper(optimizer), warmup_num_steps=3, warmup_type="linear")
    assert scheduler.optimizer is optimizer
    for _ in range(4):
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    assert scheduler.get_last_lr() == [pytest.approx(0.01)]


def test_build_scheduler_from_config_and_dict():
    config = load_config({"train_batch_size": 4, "scheduler": {"type": "WarmupDecayLR", "params": {
        "total_num_steps": 10, "warmup_min_lr": [0.0], "warmup_max_lr": 0.2, "warmup_num_steps": 2,
        "warmup_type": "linear"}}}, 1)
    scheduler = build_scheduler(make_optimizer(), config.scheduler)
    assert isinstance(scheduler, WarmupDecayLR) and scheduler.total_num_steps == 10
    assert_trajectory(scheduler, 12, lambda i: 0.0 if i < 0 else 0.2 * i / 2 if i < 2 else
                      0.2 * max(0.0, (10 - i) / 8))
    one_cycle = build_scheduler(make_optimizer(), {"type": "onecycle", "params": {"cycle_min_lr": 0.1,
                                                                                 "cycle_max_lr": 1.0}})
    assert isinstance(one_cycle, OneCycle)
    assert build_scheduler(make_optimizer(), None) is None
    with pytest.raises(ConfigError, match="scheduler.params.total_num_steps is required"):
        build_scheduler(make_optimizer(), {"type": "WarmupCosineLR"})
    with pytest.raises(TypeError, match="must be a SchedulerConfig, a dict or None"):
        build_scheduler(make_optimizer(), "WarmupLR")


@pytest.mark.parametrize("make, expected", [
    (lambda o: WarmupLR(o, warmup_type="cosine"), "warmup_type must be one of 'log', 'linear', got 'cosine'"),
    (lambda o: WarmupLR(o, warmup_num_steps=0), "warmup_num_steps must be an integer >= 1, got 0"),
    (lambda o: WarmupLR(o, warmup_min_lr="0.1"), "warmup_min_lr must be a number or a list of numbers"),
    (lambda o: WarmupLR(o, last_batch_iteration=-2), "last_batch_iteration must be an integer >= -1, got -2"),
    (lambda o: WarmupDecayLR(o, total_num_steps=0), "total_num_steps must be an integer >= 1, got 0"),
    (lambda o: WarmupCosineLR(o, 10, cos_min_ratio=-0.1), "cos_min_ratio must be a finite number >= 0"),
    (lambda o: OneCycle(o, 0.1, 1.0, cycle_first_step_size=0), "cycle_first_step_size must be a finite number > 0"),
    (lambda o: OneCycle(o, 0.1, 1.0, cycle_second_step_size=-1), "cycle_second_step_size must be a finite number"),
    (lambda o: OneCycle(o, 0.1, 1.0, cycle_first_stair_count=1.5), "cycle_first_stair_count must be an integer"),
    (lambda o: LRRangeTest(o, lr_range_test_step_size=0), "lr_range_test_step_size must be an integer >= 1"),
    (lambda o: LRRangeTest(o, lr_range_test_staircase=1), "lr_range_test_staircase must be true or false"),
])
def test_bad_arguments_name_the_parameter(make, expected):
    with pytest.raises(ConfigError) as info:
        make(make_optimizer())
    assert str(info.value).startswith(expected)


def test_bad_optimizer_step_and_state():
    with pytest.raises(TypeError, match="list is not a torch.optim.Optimizer"):
        WarmupLR([])
    scheduler = WarmupLR(make_optimizer())
    with pytest.raises(ConfigError, match="last_batch_iteration must be an integer >= -1"):
        scheduler.step(-3)
    with pytest.raises(ConfigError, match="state_dict must be a dict with 'last_batch_iteration'"):
        scheduler.load_state_dict({"last_epoch": 3})


def test_schedules_are_exported_lazily_from_the_package():
    import accelops.runtime as runtime

    assert runtime.WarmupLR is WarmupLR and runtime.build_scheduler is build_scheduler
    with pytest.raises(AttributeError, match="has no attribute 'WarmupLRR'"):
        runtime.WarmupLRR
