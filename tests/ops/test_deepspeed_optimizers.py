"""DeepSpeed's CPU optimizer names, call shapes and state_dict layout, checked against torch.optim.

DeepSpeed's layout, as ``deepspeed/ops/{adam,adagrad,lion}/cpu_*.py`` (0.19) write it: groups hold the
constructor's keys only (Adam: lr, betas, eps, weight_decay, bias_correction, amsgrad; the AdamW mode is an
attribute, not a group key); each param's state has an int ``step`` and its tensors (Adam ``exp_avg``,
``exp_avg_sq``; Adagrad ``exp_avg_sq``; Lion ``exp_avg`` plus an ``exp_avg_sq`` it never reads).
"""
import copy
import inspect

import pytest
import torch

from accelops.ops.cpu_adam import CPUAdam, DeepSpeedCPUAdam

TOL = dict(rtol=1e-5, atol=1e-6)


def deepspeed_adam_state(p, step=3, lr=1e-3, weight_decay=0.1):
    """A state_dict as DeepSpeedCPUAdam saves it for one param ``p`` (moments made up, step ``step``)."""
    gen = torch.Generator().manual_seed(0)
    return {
        "state": {0: {"step": step, "exp_avg": torch.randn(p.shape, generator=gen) * 1e-2,
                      "exp_avg_sq": torch.rand(p.shape, generator=gen) * 1e-4}},
        "param_groups": [{"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": weight_decay,
                          "bias_correction": True, "amsgrad": False, "params": [0]}],
    }


@pytest.mark.parametrize("cls", [CPUAdam, DeepSpeedCPUAdam])
def test_a_loaded_deepspeed_state_keeps_adamw(cls):
    """The issue's case: weight 1, weight decay 0.1, a zero gradient, one step: AdamW gives 1 - lr * wd."""
    p = torch.ones(8)
    opt = cls([p], lr=1e-3, weight_decay=0.1, adamw_mode=True)
    sd = deepspeed_adam_state(p)
    sd["state"][0]["exp_avg"].zero_()
    sd["state"][0]["exp_avg_sq"].zero_()
    opt.load_state_dict(sd)
    p.grad = torch.zeros(8)
    opt.step()
    torch.testing.assert_close(p, torch.full((8,), 1.0 - 1e-3 * 0.1), rtol=0, atol=1e-7)  # 0.9999, not 0.999
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


@pytest.mark.parametrize("adamw", [True, False])
def test_deepspeed_state_continues_like_torch(adamw):
    """After loading DeepSpeed's state, steps match torch.optim.AdamW/Adam given the same state."""
    p = torch.randn(33)
    ours = DeepSpeedCPUAdam([p], weight_decay=0.1, adamw_mode=adamw)
    sd = deepspeed_adam_state(p)
    ours.load_state_dict(copy.deepcopy(sd))
    ref_p = p.clone()
    ref = (torch.optim.AdamW if adamw else torch.optim.Adam)([ref_p], lr=1e-3, weight_decay=0.1)
    torch_sd = copy.deepcopy(sd)
    torch_sd["state"][0]["step"] = torch.tensor(3.0)
    torch_sd["param_groups"][0].update(maximize=False, foreach=None, capturable=False, differentiable=False,
                                       fused=None, decoupled_weight_decay=adamw)
    ref.load_state_dict(torch_sd)
    for seed in range(3):
        g = torch.randn(33, generator=torch.Generator().manual_seed(seed))
        p.grad, ref_p.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(p, ref_p, **TOL)
    assert ours.state[p]["step"].item() == 6


def test_a_torch_state_of_the_other_rule_is_refused_with_a_warning_not_obeyed():
    p = torch.ones(4)
    ref = torch.optim.Adam([p.clone()], weight_decay=0.1)
    ref.param_groups[0]["params"][0].grad = torch.ones(4)
    ref.step()
    ours = CPUAdam([p], weight_decay=0.1, adamw_mode=True)
    with pytest.warns(UserWarning, match="keeps decoupled_weight_decay=True"):
        ours.load_state_dict(ref.state_dict())
    assert ours.adam_w_mode is True


def test_missing_group_keys_keep_the_constructor_values():
    p = torch.randn(5)
    opt = DeepSpeedCPUAdam([p], bias_correction=False)
    sd = deepspeed_adam_state(p)
    del sd["param_groups"][0]["bias_correction"]
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["bias_correction"] is False  # not torch's default True


def test_signature_and_attributes_are_deepspeeds():
    names = list(inspect.signature(DeepSpeedCPUAdam.__init__).parameters)
    assert names == ["self", "model_params", "lr", "bias_correction", "betas", "eps", "weight_decay", "amsgrad",
                     "adamw_mode", "fp32_optimizer_states"]
    p = torch.randn(3)
    first, second = DeepSpeedCPUAdam([p], 1e-2, False), DeepSpeedCPUAdam([p])  # positional: lr, bias_correction
    assert second.opt_id == first.opt_id + 1
    assert first.param_groups[0]["lr"] == 1e-2 and first.param_groups[0]["bias_correction"] is False
    assert first.adam_w_mode is True and first.fp32_optimizer_states is True
    first.adam_w_mode = False
    assert first.param_groups[0]["decoupled_weight_decay"] is False


def test_deepspeed_layout_out():
    p = torch.randn(6)
    opt = DeepSpeedCPUAdam([p])
    p.grad = torch.randn(6)
    opt.step()
    opt.step()
    state = opt.state_dict()["state"][0]
    assert state["step"] == 2 and isinstance(state["step"], int)
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
    back = DeepSpeedCPUAdam([p.clone()])
    back.load_state_dict(copy.deepcopy(opt.state_dict()))
    torch.testing.assert_close(back.state[back.param_groups[0]["params"][0]]["exp_avg"], opt.state[p]["exp_avg"])
