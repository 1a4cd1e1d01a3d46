"""The guide's loop (``engine(batch)``, ``backward``, ``step``) on real gloo process groups reproduces a
single-process plain-torch loop over the same global batches: ZeRO stages 0 to 3, accumulation 1 and 2,
fp32 (within 1e-5 relative), with weight decay (DeepSpeed's "Adam" is AdamW) and gradient clipping."""
import pytest

from engine_workers import run_ranks

STAGES, ACCUMULATION, STEPS, MICRO = (0, 1, 2, 3), (1, 2), 4, 2
CASES = [{"name": f"stage{stage}-gas{gas}", "stage": stage, "gas": gas, "micro": MICRO, "steps": STEPS, "wd": 0.1,
          "clip": 0.5, "reference": True} for stage in STAGES for gas in ACCUMULATION]
_RUNS = {}


def results(world):
    """Every case on ``world`` ranks, run once per test session (one launch for all cases)."""
    if world not in _RUNS:
        _RUNS[world] = run_ranks(world, CASES, timeout_s=300)
    return _RUNS[world]


def rel_err(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("gas", ACCUMULATION)
def test_loss_trajectory_equals_plain_torch(world, stage, gas):
    name = f"stage{stage}-gas{gas}"
    ranks = [res[name] for res in results(world)]
    reference = ranks[0]["reference"]["losses"]
    for rank, res in enumerate(ranks):
        assert len(res["losses"]) == STEPS
        for step in range(STEPS):
            for k in range(gas):
                got, want = res["losses"][step][k], reference[step][rank][k]
                assert rel_err(got, want) <= 1e-5, (name, rank, step, k, got, want)
    # the global norm and the final weights agree on every rank
    assert len({res["norms"][-1] for res in ranks}) == 1
    assert len({round(res["state_sum"], 5) for res in ranks}) == 1


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("gas", ACCUMULATION)
def test_counters_boundaries_and_returned_loss(world, gas):
    for stage in STAGES:
        for rank, res in enumerate(res_[f"stage{stage}-gas{gas}"] for res_ in results(world)):
            train = MICRO * gas * world
            assert res["engine"] == {"train_batch_size": train, "micro": MICRO, "gas": gas, "stage": stage,
                                     "module_is_model": res["engine"]["module_is_model"]}
            assert "DistributedDataParallel" not in res["engine"]["module_is_model"]  # engine.module: the model
            assert res["counters"] == [[s + 1, (s + 1) * train, (s + 1) * gas, 0] for s in range(STEPS)]
            assert res["boundaries"] == [(k + 1) % gas == 0 for k in range(STEPS * gas)]
            assert res["returned"] == pytest.approx([1.0 / gas] * (STEPS * gas), rel=1e-6)
            assert res["optimizer"] == "CPUAdam"
            assert res["lrs"] == [0.01] * STEPS
            assert res["scales"] == [1.0] * STEPS


def test_ddp_synchronises_gradients_only_on_boundary_micro_steps():
    ranks = [res["stage0-gas2"] for res in results(2)]
    sums = [res["grad_sums"] for res in ranks]
    for micro_step in range(0, STEPS * 2, 2):  # first micro-step of each step: local gradients only
        assert sums[0][micro_step] != pytest.approx(sums[1][micro_step], rel=1e-6)
    for micro_step in range(1, STEPS * 2, 2):  # boundary: averaged over the ranks, equal everywhere
        assert sums[0][micro_step] == pytest.approx(sums[1][micro_step], rel=1e-9)
