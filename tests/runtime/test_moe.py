"""``deepspeed.moe`` on 2 gloo ranks with the experts split over them (``ep_size=2``), against the same layer
holding every expert on one rank (cases in ``moe_worker.py``); gating formulas against DeepSpeed's."""
import math

import pytest

from engine_workers import run_ranks

LAYER = [{"name": f"k{k}_{mode}", "kind": "moe_layer", "k": k, **opts}
         for k in (1, 2) for mode, opts in (("capacity", {}), ("no_drop", {"drop_tokens": False}))]


TRAIN = [{"name": f"train_zero{stage}", "kind": "moe_train", "stage": stage} for stage in (0, 1, 2)]
TRAIN += [{"name": f"train_zero{stage}_cpu_adam", "kind": "moe_train", "stage": stage, "kernel": True, "tol": 1e-4}
          for stage in (0, 2)]  # CPU Adam's fp32 arithmetic differs from torch's AdamW by ~1e-5 per step


@pytest.fixture(scope="module")
def two_ranks():
    return run_ranks(2, LAYER + TRAIN, timeout_s=300)


@pytest.mark.parametrize("name", [c["name"] for c in LAYER])
def test_split_experts_give_the_outputs_l_aux_and_gradients_of_one_rank_with_all(two_ranks, name):
    for rank, results in enumerate(two_ranks):
        got = results[name]
        assert got["counts"][0] == got["counts"][1], rank
        for key in ("out", "l_aux", "x_grad", "gate_grad", "expert_grad"):
            assert got[key] <= 1e-5, (rank, key, got[key])


@pytest.mark.parametrize("case", TRAIN, ids=lambda c: c["name"])
def test_an_engine_with_split_experts_trains_like_one_process_with_all(two_ranks, case):
    """ZeRO 0-2, clipped by the global norm (every expert counted once), torch AdamW or accelops' CPU Adam."""
    tol = case.get("tol", 1e-5)
    for rank, results in enumerate(two_ranks):
        got = results[case["name"]]
        assert all(abs(a - b) <= tol for a, b in zip(got["losses"], got["expected"])), (rank, got)
        assert abs(got["after"] - got["reference_after"]) <= tol, (rank, got)


def test_four_ranks_two_expert_parallel_groups_train_like_one_process():
    cases = [{"name": "t", "kind": "moe_train", "ep_size": 2, "stage": 1}]
    for rank, results in enumerate(run_ranks(4, cases, timeout_s=300)):
        got = results["t"]
        assert all(abs(a - b) <= 1e-5 for a, b in zip(got["losses"], got["expected"])), (rank, got)
        assert abs(got["after"] - got["reference_after"]) <= 1e-5, (rank, got)


def test_a_checkpoint_with_split_experts_loads_with_all_experts_on_one_rank(tmp_path):
    import torch

    from accelops.checkpoint import to_torch_state_dict

    saved = run_ranks(2, [{"name": "r", "kind": "moe_resume", "mode": "save", "dir": str(tmp_path)}])
    loaded = run_ranks(1, [{"name": "r", "kind": "moe_resume", "mode": "load", "dir": str(tmp_path)}])
    assert abs(loaded[0]["r"]["loss"] - saved[0]["r"]["loss"]) <= 1e-6
    state = to_torch_state_dict(str(tmp_path))
    experts = sorted({k.split("deepspeed_experts.")[1].split(".")[0] for k in state if "deepspeed_experts" in k})
    assert experts == ["0", "1", "2", "3"]
    assert not torch.equal(state["moe.deepspeed_moe.experts.deepspeed_experts.0.0.weight"],
                           state["moe.deepspeed_moe.experts.deepspeed_experts.2.0.weight"])


# ---------------------------------------------------------------------------------------------- gating formulas
def test_top1_capacity_dropping_and_l_aux_follow_deepspeeds_formulas():
    import torch

    from accelops.moe.sharded_moe import top1gating

    logits = torch.tensor([[5.0, 0.0], [4.0, 0.0], [3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [2.0, 0.0]])
    l_aux, combine, dispatch, counts = top1gating(logits, capacity_factor=1.0, min_capacity=1, use_rts=False)
    capacity = math.ceil(6 / 2 * 1.0)  # DeepSpeed: ceil(S / E x capacity_factor), at least min_capacity
    assert combine.shape == (6, 2, capacity) and counts.tolist() == [5, 1]
    kept = dispatch.any(dim=2)
    assert kept[:, 0].tolist() == [True, True, True, False, False, False]  # the first 3 of expert 0's 5 tokens
    assert kept[3, 1] and dispatch[3, 1, 0]  # expert 1's only token in slot 0
    gates = torch.softmax(logits, dim=1)
    mask = torch.nn.functional.one_hot(logits.argmax(1), 2).float()
    assert torch.allclose(l_aux, (gates.mean(0) * mask.mean(0)).sum() * 2)
    assert torch.allclose(combine.sum(dim=(1, 2))[:3], gates[:3, 0])


def test_top2_capacity_doubles_and_second_choices_queue_behind_first():
    import torch

    from accelops.moe.sharded_moe import top2gating

    logits = torch.tensor([[3.0, 2.0, 0.0], [3.0, 2.0, 0.0], [3.0, 0.0, 2.0], [0.0, 3.0, 2.0]])
    l_aux, combine, dispatch, counts = top2gating(logits, 0.5, 1, top2_2nd_expert_sampling=False)
    assert combine.shape[2] == max(math.ceil(4 / 3 * 0.5 * 2), 1) == 2
    assert counts.tolist() == [3, 3, 2]
    # expert 1: its first choice (token 3) takes slot 0, second choices (tokens 0, 1) queue after: token 1 drops
    assert dispatch[3, 1, 0] and dispatch[0, 1, 1] and not dispatch[1, 1].any()
    # a kept token's two gates are renormalised to 1
    assert torch.allclose(combine[0].sum(), torch.tensor(1.0))
    gates = torch.softmax(logits, dim=1)
    mask1 = torch.nn.functional.one_hot(gates.argmax(1), 3).float()
    assert torch.allclose(l_aux, (gates.mean(0) * mask1.mean(0)).mean() * 9)


def test_bad_arguments_are_clear_errors():
    import torch

    from accelops.moe.layer import MoE
    from accelops.moe.sharded_moe import top1gating

    with pytest.raises(ValueError, match="multiple of the expert-parallel size"):
        MoE(4, torch.nn.Linear(4, 4), num_experts=3, ep_size=2)
    with pytest.raises(ValueError, match="noisy_gate_policy"):
        MoE(4, torch.nn.Linear(4, 4), noisy_gate_policy="Gauss")
    with pytest.raises(ValueError, match="min_capacity"):
        top1gating(torch.zeros(2, 2), 1.0, min_capacity=4)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        MoE(4, lambda x: x)


def test_param_group_split_keeps_experts_apart():
    import torch

    from accelops.moe.layer import MoE
    from accelops.moe.utils import is_moe_param, split_params_into_different_moe_groups_for_optimizer

    layer = MoE(4, torch.nn.Linear(4, 4), num_experts=2)
    groups = split_params_into_different_moe_groups_for_optimizer(
        {"params": list(layer.parameters()), "name": "all", "lr": 0.1})
    assert [g["name"] for g in groups] == ["all", "ep_size_1"] and groups[1]["moe"] and groups[1]["lr"] == 0.1
    assert not any(is_moe_param(p) for p in groups[0]["params"])
    assert len(groups[1]["params"]) == 4 and all(is_moe_param(p) for p in groups[1]["params"])
    with pytest.raises(KeyError, match="name"):
        split_params_into_different_moe_groups_for_optimizer([{"params": list(layer.parameters())}])
