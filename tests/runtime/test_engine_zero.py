"""ZeRO stages 1-3 on FSDP2 (``fully_shard``, gloo on CPU): the FSDP units and resharding, client optimizers
re-pointed at the sharded parameters (accelops' kernels on local shards, torch's on DTensors), and the
trajectory at 4 ranks; errors for optimizers that cannot be re-pointed."""
import pytest
import torch

import accelops
from engine_workers import make_model, run_ranks

CLIENTS = ("torch_adamw", "cpu_adam", "cpu_adam_callable")
CASES = [{"name": f"{client}-stage{stage}", "stage": stage, "gas": 2, "micro": 2, "steps": 3, "wd": 0.1, "clip": 0.5,
          "client": client, "reference": True} for client in CLIENTS for stage in (1, 3)]
CASES += [{"name": f"unused-stage{stage}", "stage": stage, "gas": 2, "micro": 2, "steps": 3, "wd": 0.1, "clip": 0.5,
           "unused": True, "reference": True} for stage in (0, 2)]
CASES += [{"name": f"world4-stage{stage}", "stage": stage, "gas": 2, "micro": 1, "steps": 3, "wd": 0.1, "clip": 0.5,
           "reference": True} for stage in (0, 1, 2, 3)]
CASES += [{"name": f"world4-bf16-stage{stage}", "stage": stage, "gas": 1, "micro": 2, "steps": 3, "wd": 0.1,
           "clip": 0.5, "precision": "bf16", "reference": True} for stage in (0, 1, 2, 3)]
BF16_TOLERANCE = 2e-2  # a few bf16 ulps of the loss (see test_engine_precision.py)


def check_trajectory(ranks, tolerance=1e-5):
    reference = ranks[0]["reference"]["losses"]
    for rank, res in enumerate(ranks):
        for step, per_step in enumerate(res["losses"]):
            for k, got in enumerate(per_step):
                want = reference[step][rank][k]
                assert abs(got - want) <= tolerance * abs(want), (rank, step, k, got, want)


@pytest.fixture(scope="module")
def two_rank_results():
    return run_ranks(2, [case for case in CASES if case["name"].split("-")[0] != "world4"], timeout_s=300)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("stage", [1, 3])
def test_client_optimizers_on_sharded_parameters(two_rank_results, client, stage):
    ranks = [res[f"{client}-stage{stage}"] for res in two_rank_results]
    check_trajectory(ranks)
    assert ranks[0]["optimizer"] == ("AdamW" if client == "torch_adamw" else "CPUAdam")


@pytest.mark.parametrize("stage", [0, 2])
def test_a_parameter_that_forward_never_uses(two_rank_results, stage):
    check_trajectory([res[f"unused-stage{stage}"] for res in two_rank_results])


@pytest.mark.slow
def test_four_ranks_every_stage_fp32_and_bf16():
    results = run_ranks(4, [case for case in CASES if case["name"].startswith("world4")], timeout_s=300)
    for stage in (0, 1, 2, 3):
        ranks = [res[f"world4-stage{stage}"] for res in results]
        check_trajectory(ranks)
        assert [res["counters"][-1] for res in ranks] == [[3, 24, 6, 0]] * 4
        bf16 = [res[f"world4-bf16-stage{stage}"] for res in results]
        check_trajectory(bf16, BF16_TOLERANCE)
        assert [res["counters"][-1] for res in bf16] == [[3, 24, 3, 0]] * 4


# ---------------------------------------------------------------------------------------------- in process
pytestmark_in_process = pytest.mark.usefixtures("world_of_one")


def sharded(stage, **kwargs):
    config = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}},
              "zero_optimization": {"stage": stage}}
    return accelops.initialize(model=make_model(), config=config, **kwargs)


@pytestmark_in_process
@pytest.mark.parametrize("stage, resharded", [(1, False), (2, False), (3, True)])
def test_units_and_resharding(stage, resharded):
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    engine, optimizer, _, _ = sharded(stage)
    model = engine.module
    assert [name for name, module in model.named_modules() if isinstance(module, FSDPModule)] == [
        "", "inp", "blocks.0", "blocks.1", "out"]  # each child holding params, ModuleList items, the root
    assert all(isinstance(p, DTensor) for p in model.parameters())
    assert all(not isinstance(p, DTensor) for group in optimizer.param_groups for p in group["params"])  # shards
    loss = engine(torch.randn(2, 6)).pow(2).mean()
    assert isinstance(model.inp.weight, DTensor) == resharded  # stages 1-2 keep parameters gathered
    engine.backward(loss)
    engine.step()
    assert engine.global_steps == 1 and engine.get_global_grad_norm() > 0
    full = engine.module_state_dict()
    assert not any(isinstance(v, DTensor) for v in full.values())
    assert full["inp.weight"].shape == (16, 6)


@pytestmark_in_process
def test_optimizer_that_cannot_be_repointed():
    model = make_model()
    stranger = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD(list(model.parameters()) + [stranger], lr=0.1)
    config = {"train_batch_size": 2, "zero_optimization": {"stage": 2}}
    with pytest.raises(ValueError, match="is not a parameter of the model"):
        accelops.initialize(model=model, optimizer=opt, config=config)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 6)).sum().backward()
    opt.step()
    with pytest.raises(ValueError, match="already has state"):
        accelops.initialize(model=model, optimizer=opt, config=config)


@pytestmark_in_process
def test_replaced_sharded_parameter_is_reported():
    engine, *_ = sharded(1)
    loss = engine(torch.randn(2, 6)).pow(2).mean()
    engine.backward(loss)
    state = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    engine.module.load_state_dict(state, assign=True)
    with pytest.raises(RuntimeError, match="replaced after initialize"):
        engine.step()


@pytest.mark.parametrize("stage", [0, 1])
def test_no_sync_keeps_gradients_local_until_the_next_synchronised_backward(stage):
    ranks = [res["no_sync"] for res in run_ranks(2, [{"kind": "no_sync", "name": "no_sync", "stage": stage}])]
    averaged = sum(res["plain"] for res in ranks) / len(ranks)
    for res in ranks:
        assert res["outside"] == pytest.approx(averaged, rel=1e-5)  # both micro-batches, reduced once
        assert res["global_steps"] == 1
    if stage == 0:  # DDP: the gradient inside no_sync is this rank's own
        assert ranks[0]["inside"] != pytest.approx(ranks[1]["inside"], rel=1e-6)
    else:  # FSDP2 holds the unreduced gradient unsharded; no sharded (reduced) .grad exists yet
        assert [res["inside"] for res in ranks] == [None, None]


@pytestmark_in_process
def test_train_and_eval_reach_the_model():
    engine, *_ = sharded(1)
    engine.eval()
    assert not engine.training and not any(m.training for m in engine.module.modules())
    engine.train()
    assert engine.training and all(m.training for m in engine.module.modules())
