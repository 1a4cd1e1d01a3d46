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
