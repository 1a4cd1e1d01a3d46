"""bf16 and fp16 on real gloo process groups: fp32 master weights with autocast compute reproduce the
plain-torch loop (with DeepSpeed's loss scaling for fp16) on every ZeRO stage; overflowing steps are
skipped on every rank alike, the scheduler does not step on them, and the dynamic scale follows
DeepSpeed's rules; gradients are unscaled with the scale they were computed with."""
import pytest

from engine_workers import run_ranks

STAGES, STEPS, MICRO = (0, 1, 2, 3), 4, 2
# The 16-bit forward rounds to the dtype's resolution, so a last-bit difference in an fp32 weight (the
# gradient reduction's summation order differs from the single-process loop) can move a loss by about
# one 16-bit ulp: the tolerance is a few ulps of each dtype.
TOLERANCE = {"bf16": 2e-2, "fp16": 2e-3}
WARMUP = {"type": "WarmupLR", "params": {"warmup_min_lr": 0.001, "warmup_max_lr": 0.01, "warmup_num_steps": 50,
                                         "warmup_type": "linear"}}


def warmup_lr(applied_steps):
    """WarmupLR's lr after ``applied_steps`` scheduler steps (DeepSpeed's linear formula)."""
    return 0.001 if applied_steps == 0 else 0.001 + 0.009 * (applied_steps - 1) / 50
CASES = [{"name": f"{precision}-stage{stage}-gas{gas}", "stage": stage, "gas": gas, "micro": MICRO, "steps": STEPS,
          "wd": 0.1, "clip": 0.5, "precision": precision, "reference": True}
         for precision in ("bf16", "fp16") for stage in STAGES for gas in (1, 2)]
CASES += [
    # the scale doubles after every clean step: unscaling with the updated scale would halve SGD's steps
    {"name": "fp16-growth", "stage": 0, "gas": 2, "micro": MICRO, "steps": 6, "sgd": True, "lr": 0.05,
     "precision": "fp16", "fp16": {"loss_scale_window": 1, "initial_scale_power": 8}, "reference": True},
    # a first scale of 2**24 overflows fp16 until it has halved often enough
    *[{"name": f"fp16-overflow-stage{stage}", "stage": stage, "gas": 2, "micro": MICRO, "steps": 12,
       "precision": "fp16", "fp16": {"initial_scale_power": 24, "hysteresis": 1, "loss_scale_window": 4},
       "extra": {"scheduler": WARMUP}, "reference": True} for stage in (0, 3)],
    # one NaN in one gradient shard of one rank: every rank skips that step
    {"name": "fp16-poison-stage0", "stage": 0, "gas": 1, "micro": MICRO, "steps": 3, "precision": "fp16",
     "fp16": {"hysteresis": 1}, "poison": {"step": 1, "rank": 1}, "extra": {"scheduler": WARMUP}},
    {"name": "bf16-poison-stage2", "stage": 2, "gas": 1, "micro": MICRO, "steps": 3, "precision": "bf16",
     "poison": {"step": 1, "rank": 1}, "extra": {"scheduler": WARMUP}},
]
# gradients reduced in 16 bits (communication_data_type): DDP's compression hook, FSDP's reduce_dtype
CASES += [{"name": f"comm-{dtype}-stage{stage}", "stage": stage, "gas": 2, "micro": MICRO, "steps": STEPS, "wd": 0.1,
           "clip": 0.5, "reference": True, "extra": {"communication_data_type": dtype}}
          for dtype in ("bf16", "fp16") for stage in (0, 2)]
_RUNS = {}


def results(world):
    if world not in _RUNS:
        _RUNS[world] = run_ranks(world, CASES, timeout_s=400)
    return _RUNS[world]


def case_results(world, name):
    return [res[name] for res in results(world)]


def assert_losses_match(name, ranks, tolerance):
    reference = ranks[0]["reference"]["losses"]
    for rank, res in enumerate(ranks):
        for step, per_step in enumerate(res["losses"]):
            for k, got in enumerate(per_step):
                want = reference[step][rank][k]
                assert abs(got - want) <= tolerance * abs(want), (name, rank, step, k, got, want)


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("gas", [1, 2])
def test_mixed_precision_trajectory_equals_plain_torch(world, precision, stage, gas):
    name = f"{precision}-stage{stage}-gas{gas}"
    ranks = case_results(world, name)
    assert_losses_match(name, ranks, TOLERANCE[precision])
    reference = ranks[0]["reference"]
    for res in ranks:
        assert res["scales"] == reference["scales"]  # 2**16 unless the first steps overflow
        assert res["counters"][-1] == [STEPS, STEPS * MICRO * gas * world, STEPS * gas, sum(reference["skipped"])]
    assert len({res["norms"][-1] for res in ranks}) == 1


@pytest.mark.parametrize("world", [1, 2])
def test_unscaling_uses_the_scale_the_gradients_carry(world):
    ranks = case_results(world, "fp16-growth")
    assert_losses_match("fp16-growth", ranks, TOLERANCE["fp16"])
    for res in ranks:
        assert res["scales"] == [2.0 ** 8 * 2 ** max(0, step) for step in range(6)]
        assert res["scales"] == ranks[0]["reference"]["scales"]


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("stage", [0, 3])
def test_overflowing_steps_are_skipped_alike(world, stage):
    name = f"fp16-overflow-stage{stage}"
    ranks = case_results(world, name)
    reference = ranks[0]["reference"]
    skipped = reference["skipped"]
    assert skipped[0] and not all(skipped), skipped  # the test needs both kinds of steps
    assert_losses_match(name, ranks, TOLERANCE["fp16"])
    for res in ranks:
        assert res["scales"] == reference["scales"] == ranks[0]["scales"]
        assert [c[3] for c in res["counters"]] == [sum(skipped[:i + 1]) for i in range(len(skipped))]
        assert [c[0] for c in res["counters"]] == list(range(1, len(skipped) + 1))  # skipped steps count too
        for step, skip in enumerate(skipped):
            assert res["lrs"][step] == pytest.approx(warmup_lr(step + 1 - sum(skipped[:step + 1])))
            if step:  # a skipped step changes no parameter, an applied one does
                assert (res["param_sums"][step] == res["param_sums"][step - 1]) == skip
        assert res["norms"][-1] < float("inf")


@pytest.mark.parametrize("name, scale", [("fp16-poison-stage0", 2.0 ** 15), ("bf16-poison-stage2", 1.0)])
def test_an_overflow_one_rank_sees_skips_the_step_on_every_rank(name, scale):
    ranks = case_results(2, name)
    for res in ranks:
        assert [c[3] for c in res["counters"]] == [0, 1, 1]
        assert res["param_sums"][1] == res["param_sums"][0]  # the poisoned step changed nothing
        assert res["param_sums"][2] != res["param_sums"][1]
        assert res["lrs"] == pytest.approx([warmup_lr(1), warmup_lr(1), warmup_lr(2)])
        assert res["scales"][1:] == [scale, scale]
        assert res["norms"][1] == float("inf")


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("stage", [0, 2])
def test_gradients_reduced_in_16_bits(dtype, stage):
    name = f"comm-{dtype}-stage{stage}"
    ranks = case_results(2, name)
    assert_losses_match(name, ranks, 2e-3)
    reference = ranks[0]["reference"]["losses"]
    worst = max(abs(res["losses"][t][k] - reference[t][r][k]) / abs(reference[t][r][k])
                for r, res in enumerate(ranks) for t in range(STEPS) for k in range(2))
    if dtype == "bf16":  # fp32 reduction stays within 1e-5 here; bf16's 8-bit mantissa shows
        assert worst > 1e-5
