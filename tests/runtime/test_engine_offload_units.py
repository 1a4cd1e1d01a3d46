"""ZeRO-Offload (FSDP2's CPU offload policy with the CPU kernel optimizers) and the FSDP unit rule
(``accelops.fsdp_units``): offloaded training follows the same trajectory as without offload (and as
plain torch) on 2 gloo ranks; the units are the ones the rule names."""
import pytest
import torch
from torch import nn

import accelops
from engine_workers import make_model, run_ranks
from test_engine_zero import check_trajectory, pytestmark_in_process

OFFLOAD = {"offload_optimizer": {"device": "cpu"}}
CASES = [{"name": f"offload-stage{stage}-{precision}", "stage": stage, "gas": 2, "micro": 2, "steps": 3, "wd": 0.1,
          "clip": 0.5, "precision": precision, "reference": True,
          "extra": {"zero_optimization": {"stage": stage, **OFFLOAD,
                                          **({"offload_param": {"device": "cpu"}} if stage == 3 else {})}}}
         for stage in (1, 2, 3) for precision in ("fp32", "bf16")]
CASES += [{"name": f"plain-stage{stage}-bf16", "stage": stage, "gas": 2, "micro": 2, "steps": 3, "wd": 0.1,
           "clip": 0.5, "precision": "bf16"} for stage in (1, 2, 3)]
CASES += [{"name": f"units-{rule}", "stage": 3, "gas": 1, "micro": 2, "steps": 3, "wd": 0.1, "reference": True,
           "extra": {"accelops": {"fsdp_units": rule}}} for rule in ("root", "children")]


@pytest.fixture(scope="module")
def results():
    return run_ranks(2, CASES, timeout_s=300)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_offload_trajectory_equals_plain_torch(results, stage):
    ranks = [res[f"offload-stage{stage}-fp32"] for res in results]
    check_trajectory(ranks)
    assert {res["optimizer"] for res in ranks} == {"CPUAdam"}
    assert len({round(res["state_sum"], 5) for res in ranks}) == 1


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_offload_bf16_is_the_same_run_as_without_offload(results, stage):
    for res in results:
        offloaded, plain = res[f"offload-stage{stage}-bf16"], res[f"plain-stage{stage}-bf16"]
        assert offloaded["losses"] == plain["losses"] and offloaded["norms"] == plain["norms"]


@pytest.mark.parametrize("rule", ["root", "children"])
def test_unit_rules_train_alike(results, rule):
    check_trajectory([res[f"units-{rule}"] for res in results])


# ---------------------------------------------------------------------------------------------- in one process
def _units(engine):
    from torch.distributed.fsdp import FSDPModule

    return [name for name, module in engine.module.named_modules() if isinstance(module, FSDPModule)]


def _engine(model, zero, **section):
    config = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.01}},
              "zero_optimization": zero, **({"accelops": section} if section else {})}
    return accelops.initialize(model=model, config=config)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.lin = nn.LayerNorm(6), nn.Linear(6, 6)

    def forward(self, x):
        return x + self.lin(self.norm(x))


class Tower(nn.Module):
    """Blocks inside a Sequential inside the root: "children" sees one child, _no_split_modules the blocks."""
    _no_split_modules = ["Block"]

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(Block(), Block())
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.body(x))


@pytestmark_in_process
def test_offload_uses_fsdp_cpu_offload_and_the_cpu_kernel():
    from torch.distributed.fsdp import CPUOffloadPolicy

    engine, optimizer, _, _ = _engine(make_model(), {"stage": 2, **OFFLOAD})
    assert type(optimizer).__name__ == "CPUAdam"
    policies = [group.offload_policy for group in engine.module._get_fsdp_state()._fsdp_param_groups]
    assert policies and all(isinstance(p, CPUOffloadPolicy) and not p.pin_memory for p in policies)
    before = engine.module_state_dict()["out.weight"].clone()
    loss = engine(torch.randn(2, 6)).pow(2).mean()
    engine.backward(loss)
    engine.step()
    assert not torch.equal(engine.module_state_dict()["out.weight"], before)
    assert all(p.device.type == "cpu" for p in engine.module.parameters())


@pytestmark_in_process
def test_without_offload_the_policy_is_the_default():
    from torch.distributed.fsdp import CPUOffloadPolicy

    engine, *_ = _engine(make_model(), {"stage": 2})
    assert not any(isinstance(group.offload_policy, CPUOffloadPolicy)
                   for group in engine.module._get_fsdp_state()._fsdp_param_groups)


@pytestmark_in_process
@pytest.mark.parametrize("section, expected", [
    ({}, ["", "body.0", "body.1"]),                                          # auto: _no_split_modules
    ({"fsdp_units": "children"}, ["", "body", "head"]),
    ({"fsdp_units": "root"}, [""]),
    ({"fsdp_units": ["Block", "Linear"]}, ["", "body.0", "body.0.lin", "body.1", "body.1.lin", "head"]),
])
def test_unit_rules(section, expected):
    engine, *_ = _engine(Tower(), {"stage": 3}, **section)
    assert _units(engine) == expected
    loss = engine(torch.randn(2, 6)).pow(2).mean()
    engine.backward(loss)
    engine.step()
    assert engine.global_steps == 1


@pytestmark_in_process
def test_auto_without_no_split_modules_takes_the_children():
    engine, *_ = _engine(make_model(), {"stage": 1})
    assert _units(engine) == ["", "inp", "blocks.0", "blocks.1", "out"]


@pytestmark_in_process
def test_a_unit_class_the_model_lacks_is_named():
    with pytest.raises(ValueError, match=r"accelops.fsdp_units names \['Blok'\].*\['Block', 'LayerNorm', 'Linear'"):
        _engine(Tower(), {"stage": 3}, fsdp_units=["Blok"])


@pytest.mark.parametrize("value", ["blocks", [], ["Block", 3], 5])
def test_bad_unit_rules_are_config_errors(value):
    from accelops.runtime.config import load_config
    from accelops.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="accelops.fsdp_units.*'auto', 'children', 'root'"):
        load_config({"train_batch_size": 2, "accelops": {"fsdp_units": value}}, 1)


def test_unknown_accelops_key_names_the_closest():
    from accelops.runtime.config import load_config
    from accelops.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="fsdp_unit.*fsdp_units"):
        load_config({"train_batch_size": 2, "accelops": {"fsdp_unit": "root"}}, 1)


class TiedLM(nn.Module):
    """A head tied to the token embedding, in another child (GPT-2 and most Hugging Face LMs)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.body = nn.Embedding(16, 8), nn.Linear(8, 8)
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(torch.tanh(self.body(self.emb(x)))).logsumexp(-1).mean()


@pytestmark_in_process
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_tied_weights_stay_in_one_unit_and_train_like_plain_torch(stage):
    plain = TiedLM()
    reference = torch.optim.AdamW(plain.parameters(), lr=0.01, weight_decay=0.0)
    engine, *_ = _engine(TiedLM(), {"stage": stage})
    assert _units(engine) == ["", "body"]  # emb and head share a parameter: they stay with the root
    tokens = torch.randint(0, 16, (3, 2, 4), generator=torch.Generator().manual_seed(1))
    for batch in tokens:
        loss = engine(batch)
        engine.backward(loss)
        engine.step()
        want = plain(batch)
        want.backward()
        reference.step()
        reference.zero_grad()
        assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.equal(engine.module_state_dict()["head.weight"], engine.module_state_dict()["emb.weight"])
