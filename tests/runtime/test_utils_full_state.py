"""DeepSpeed's ``safe_get_full_*`` / ``safe_set_full_*`` on a 2-rank engine, against an unsharded plain-torch
copy of the model trained on the same batches (the case is ``full_state_worker.full_state_case``).

ZeRO-3 with torch's AdamW (the optimizer holds the DTensor parameters) and with accelops' CPU Adam (it holds
each rank's local shards), ZeRO-1, and stage 0 (DDP, full parameters)."""
import pytest

from engine_workers import run_ranks

CASES = [
    {"name": "zero3_torch", "kind": "full_state", "stage": 3, "client": "torch_adamw", "tol": 1e-6},
    {"name": "zero3_kernel", "kind": "full_state", "stage": 3, "client": "cpu_adam", "tol": 1e-5},
    {"name": "zero1_torch", "kind": "full_state", "stage": 1, "client": "torch_adamw", "tol": 1e-6},
    {"name": "ddp_torch", "kind": "full_state", "stage": 0, "client": "torch_adamw", "tol": 1e-6},
]


@pytest.fixture(scope="module")
def results():
    return run_ranks(2, CASES, timeout_s=300)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_full_values_equal_the_unsharded_model_on_every_rank(results, case):
    for rank, per_rank in enumerate(results):
        got = per_rank[case["name"]]
        assert all(got["sharded"]) == (case["stage"] > 0), got["sharded"]  # the comparison crosses shards
        for key in ("grad_err", "param_err", "exp_avg_err", "exp_avg_sq_err"):
            assert got[key] <= case["tol"], (rank, key, got[key])
        assert all(got["grad_after_step"])  # step() clears gradients: nothing to read
        assert got["unmanaged"]  # a parameter no engine manages: None, as DeepSpeed


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_setters_change_what_every_rank_trains_with(results, case):
    for rank, per_rank in enumerate(results):
        got = per_rank[case["name"]]
        assert got["set_read_back_err"] == 0.0, rank  # every rank's shard holds its part of the new values
        assert got["moved_by_set"] > 1e-3  # the step after the set moved the parameter ...
        assert got["after_set_step_err"] <= case["tol"], (rank, got["after_set_step_err"])  # ... as plain torch


def test_errors_name_what_is_wrong(results):
    got = results[0]["zero3_torch"]
    assert "no state for this parameter yet" in got["state_before_step"]
    assert "'no_such_key'" in got["missing_key"] and "exp_avg_sq" in got["missing_key"]
    assert "has 3 elements" in got["bad_size"] and "(3, 16)" in got["bad_size"]


def test_a_world_of_one_and_copies_of_managed_parameters(world_of_one):
    import copy
    import io

    import torch

    import accelops
    from accelops.utils import (safe_get_full_fp32_param, safe_get_full_grad, safe_get_full_optimizer_state,
                                safe_set_full_fp32_param, safe_set_full_grad)

    engine, *_ = accelops.initialize(model=torch.nn.Linear(3, 2), config={
        "train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "Adam", "params": {"lr": 0.1}}})
    weight = engine.module.weight
    full = safe_get_full_fp32_param(weight)
    assert torch.equal(full, weight) and full.data_ptr() != weight.data_ptr()  # a copy, as DeepSpeed's
    assert safe_get_full_grad(weight) is None  # no backward yet
    safe_set_full_grad(weight, torch.ones(6))  # a parameter without a gradient gets one
    assert torch.equal(weight.grad, torch.ones(2, 3))
    assert safe_get_full_grad(weight) is weight.grad  # a plain gradient is returned itself, as DeepSpeed
    engine.step()
    assert safe_get_full_optimizer_state(weight, "exp_avg").shape == (2, 3)

    saved = io.BytesIO()
    torch.save(engine.module, saved)
    saved.seek(0)
    for other in (torch.load(saved, weights_only=False), copy.deepcopy(engine.module)):
        # a copy belongs to no engine: None, and the setter leaves it alone, as DeepSpeed for an unmanaged param
        assert safe_get_full_fp32_param(other.weight) is None
        assert safe_get_full_optimizer_state(other.weight, "exp_avg") is None
        before = other.weight.detach().clone()
        safe_set_full_fp32_param(other.weight, torch.zeros(2, 3))
        assert torch.equal(other.weight, before)
    with pytest.raises(TypeError, match="param must be a torch.Tensor"):
        safe_get_full_fp32_param("weight")
