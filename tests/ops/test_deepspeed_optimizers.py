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


# ---------------------------------------------------------------------------------------------- Adagrad
from accelops.ops.cpu_adagrad import CPUAdagrad, DeepSpeedCPUAdagrad  # noqa: E402
from accelops.ops.cpu_lion import CPULion, DeepSpeedCPULion  # noqa: E402


def test_deepspeed_adagrad_state_loads_and_continues_like_torch():
    p = torch.randn(20)
    sd = {"state": {0: {"step": 2, "exp_avg_sq": torch.rand(20)}},
          "param_groups": [{"lr": 1e-2, "eps": 1e-10, "weight_decay": 0.1, "amsgrad": False, "params": [0]}]}
    ours = DeepSpeedCPUAdagrad([p], weight_decay=0.1)
    ours.load_state_dict(copy.deepcopy(sd))
    ref_p = p.clone()
    ref = torch.optim.Adagrad([ref_p], lr=1e-2, weight_decay=0.1)
    ref.load_state_dict({"state": {0: {"step": torch.tensor(2.0), "sum": sd["state"][0]["exp_avg_sq"].clone()}},
                         "param_groups": [{**sd["param_groups"][0], "lr_decay": 0.0, "initial_accumulator_value": 0.0,
                                           "foreach": None, "maximize": False, "differentiable": False,
                                           "fused": None}]})
    for seed in range(3):
        g = torch.randn(20, generator=torch.Generator().manual_seed(seed))
        p.grad, ref_p.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(p, ref_p, **TOL)
    out = ours.state_dict()["state"][0]
    assert set(out) == {"step", "exp_avg_sq"} and out["step"] == 5
    torch.testing.assert_close(out["exp_avg_sq"], ref.state[ref_p]["sum"], **TOL)


def test_deepspeed_adagrad_signature():
    names = list(inspect.signature(DeepSpeedCPUAdagrad.__init__).parameters)
    assert names == ["self", "model_params", "lr", "eps", "weight_decay", "amsgrad", "fp32_optimizer_states"]
    opt = DeepSpeedCPUAdagrad([torch.randn(2)], 0.5)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["eps"] == 1e-10


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sparse_embedding_gradients(weight_decay):
    """Only the looked-up rows change; with weight decay 0 the result equals torch's sparse Adagrad, and with
    decay it equals torch's dense Adagrad run on the touched rows alone (DeepSpeed's rule)."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(12, 5, sparse=True)
    start = emb.weight.detach().clone()
    opt = DeepSpeedCPUAdagrad(emb.parameters(), lr=0.1, weight_decay=weight_decay)
    index = torch.tensor([1, 4, 4, 9])  # a repeated row: the grad arrives uncoalesced
    emb(index).pow(2).sum().backward()
    grad = emb.weight.grad.coalesce()
    opt.step()
    rows = torch.tensor([1, 4, 9])
    untouched = torch.ones(12, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(emb.weight.detach()[untouched], start[untouched])
    ref_rows = start[rows].clone()
    ref = torch.optim.Adagrad([ref_rows], lr=0.1, weight_decay=weight_decay)
    ref_rows.grad = grad.to_dense()[rows]
    ref.step()
    torch.testing.assert_close(emb.weight.detach()[rows], ref_rows, **TOL)
    assert opt.state_dict()["state"][0]["step"] == 1


def test_sparse_gradient_errors_are_clear():
    p = torch.zeros(4, 3)
    opt = CPUAdagrad([p])
    wrong = torch.sparse_coo_tensor(torch.tensor([[0]]), torch.ones(1, 3, dtype=torch.float64), (4, 3),
                                    check_invariants=True)
    with pytest.raises(TypeError, match="sparse grad of torch.float64"):
        opt.step(grads=[wrong])
    p.grad = torch.sparse_coo_tensor(torch.tensor([[0]]), torch.ones(1, 3), (4, 3), check_invariants=True)
    with pytest.raises(ValueError, match="param_copies must be None"):
        opt.step(param_copies=[torch.zeros(4, 3, dtype=torch.bfloat16)])
    assert torch.equal(p, torch.zeros(4, 3))  # nothing changed


# ---------------------------------------------------------------------------------------------- Lion
def test_deepspeed_lion_defaults_and_its_state_with_the_unused_key():
    names = inspect.signature(DeepSpeedCPULion.__init__).parameters
    assert names["lr"].default == 1e-3 and names["betas"].default == (0.9, 0.999)
    p = torch.randn(10)
    opt = DeepSpeedCPULion([p], weight_decay=0.1)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    sd = {"state": {0: {"step": 4, "exp_avg": torch.randn(10), "exp_avg_sq": torch.zeros(10)}},
          "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.1, "params": [0]}]}
    opt.load_state_dict(copy.deepcopy(sd))
    twin = CPULion([p.clone()], lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1)
    twin.load_state_dict(copy.deepcopy(sd))  # the torch-style class reads DeepSpeed's layout too
    g = torch.randn(10)
    p.grad = g.clone()
    twin.param_groups[0]["params"][0].grad = g.clone()
    opt.step()
    twin.step()
    assert torch.equal(p, twin.param_groups[0]["params"][0])
    # Lion's moment update: exp_avg = beta2 * exp_avg + (1 - beta2) * grad
    m = sd["state"][0]["exp_avg"]
    assert opt.state_dict()["state"][0]["step"] == 5 and set(opt.state_dict()["state"][0]) == {"step", "exp_avg"}
    torch.testing.assert_close(opt.state[p]["exp_avg"], m * 0.999 + g * 0.001, **TOL)


# ---------------------------------------------------------------------------------------------- shared
@pytest.mark.parametrize("cls,kwargs", [(DeepSpeedCPUAdam, {}), (DeepSpeedCPUAdagrad, {}), (DeepSpeedCPULion, {})])
def test_fp32_optimizer_states_false_keeps_state_in_the_param_dtype(cls, kwargs):
    p16 = torch.randn(64).to(torch.bfloat16)
    p32 = p16.float()
    low = cls([p16], fp32_optimizer_states=False, **kwargs)
    full = cls([p32], **kwargs)
    for seed in range(2):
        g = torch.randn(64, generator=torch.Generator().manual_seed(seed))
        p16.grad, p32.grad = g.to(torch.bfloat16), g.clone()
        low.step()
        full.step()
    for key, value in low.state[p16].items():
        if key != "step":
            assert value.dtype == torch.bfloat16
            torch.testing.assert_close(value.float(), full.state[p32][key], rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(p16.float(), p32, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("cls", [DeepSpeedCPUAdam, DeepSpeedCPUAdagrad, DeepSpeedCPULion])
def test_a_param_off_the_cpu_is_an_assertion_error_as_in_deepspeed(cls):
    p = torch.zeros(3, device="meta")
    p.grad = torch.zeros(3, device="meta")
    with pytest.raises(AssertionError, match="updates CPU tensors only"):
        cls([p]).step()


# ---------------------------------------------------------------------------------------------- sub groups
@pytest.mark.parametrize("adamw", [True, False])
def test_step_subgroup_then_rollback(adamw):
    flat = torch.randn(50)
    opt = DeepSpeedCPUAdam([flat], lr=1e-2, weight_decay=0.1, adamw_mode=adamw)
    ref_p = flat.clone()
    ref = (torch.optim.AdamW if adamw else torch.optim.Adam)([ref_p], lr=1e-2, weight_decay=0.1)
    for seed in range(2):
        g = torch.randn(50, generator=torch.Generator().manual_seed(seed))
        flat.grad, ref_p.grad = g.clone(), g.clone()
        opt.step_subgroup(7)
        ref.step()
    torch.testing.assert_close(flat, ref_p, **TOL)
    assert set(opt.state) == {7} and opt.state[7]["step"].item() == 2
    before_m = ref.state[ref_p]["exp_avg"].clone()
    # a third step, then undo it: back to the state after two steps
    after_two = flat.clone()
    flat.grad = torch.randn(50, generator=torch.Generator().manual_seed(9))
    opt.step_subgroup(7)
    assert not torch.allclose(flat, after_two)
    opt.rollback_subgroup(7)
    torch.testing.assert_close(flat, after_two, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(opt.state[7]["exp_avg"], before_m, rtol=1e-4, atol=1e-6)
    assert opt.state[7]["step"].item() == 2
    with pytest.raises(RuntimeError, match="no step to undo"):
        opt.rollback_subgroup(3)


def test_rollback_subgroup_errors_carry_deepspeeds_messages():
    """DeepSpeed's tests (and callers) match these texts: one for a sub group never stepped, one for step 0."""
    flat = torch.randn(8)
    opt = DeepSpeedCPUAdam([flat])
    with pytest.raises(RuntimeError, match="Cannot rollback optimizer state for sub_group_id 0"):
        opt.rollback_subgroup(0)
    flat.grad = torch.randn(8)
    opt.step_subgroup(0)
    opt.rollback_subgroup(0)
    assert opt.state[0]["step"] == 0
    with pytest.raises(RuntimeError, match="Cannot rollback sub_group_id 0: step count is 0"):
        opt.rollback_subgroup(0)


def test_step_subgroup_needs_one_param_with_a_grad():
    a, b = torch.randn(3), torch.randn(3)
    a.grad, b.grad = torch.randn(3), torch.randn(3)
    with pytest.raises(ValueError, match="exactly one param with a gradient"):
        DeepSpeedCPUAdam([a, b]).step_subgroup(0)


# ---------------------------------------------------------------------------------------------- FusedAdam
def test_fused_adam_signature_and_deepspeed_states():
    from accelops.ops.fused_adam import FusedAdam

    names = list(inspect.signature(FusedAdam.__init__).parameters)[:10]
    assert names == ["self", "params", "lr", "bias_correction", "betas", "eps", "adam_w_mode", "weight_decay",
                     "amsgrad", "set_grad_none"]
    p = torch.ones(6)
    opt = FusedAdam([p], lr=1e-3, weight_decay=0.1, adam_w_mode=True)
    assert opt.adam_w_mode is True
    # an old DeepSpeed FusedAdam checkpoint: the step lives in the group, moments in the param dtype
    sd = {"state": {0: {"exp_avg": torch.zeros(6), "exp_avg_sq": torch.zeros(6)}},
          "param_groups": [{"lr": 1e-3, "bias_correction": True, "betas": (0.9, 0.999), "eps": 1e-8,
                            "weight_decay": 0.1, "step": 5, "params": [0]}]}
    opt.load_state_dict(sd)
    assert opt.state[p]["step"].item() == 5
    p.grad = torch.zeros(6)
    opt.step()
    torch.testing.assert_close(p, torch.full((6,), 1.0 - 1e-4), rtol=0, atol=1e-7)  # AdamW kept
    with pytest.warns(UserWarning, match="keeps decoupled_weight_decay=True"):
        opt.load_state_dict({**sd, "param_groups": [{**sd["param_groups"][0], "decoupled_weight_decay": False}]})
    assert opt.adam_w_mode is True


def test_deepspeed_module_paths():
    from accelops.ops.adagrad import DeepSpeedCPUAdagrad as adagrad
    from accelops.ops.adam import DeepSpeedCPUAdam as adam
    from accelops.ops.adam import FusedAdam
    from accelops.ops.fused_adam import FusedAdam as fused
    from accelops.ops.lion import DeepSpeedCPULion as lion

    assert (adam, adagrad, lion, FusedAdam) == (DeepSpeedCPUAdam, DeepSpeedCPUAdagrad, DeepSpeedCPULion, fused)
    import accelops.ops

    assert accelops.ops.DeepSpeedCPUAdam is DeepSpeedCPUAdam


def test_fused_adam_amsgrad_is_the_error_type_deepspeed_raises():
    from accelops.ops.fused_adam import FusedAdam

    with pytest.raises(RuntimeError, match="amsgrad"):
        FusedAdam([torch.zeros(2)], amsgrad=True)
    with pytest.raises(ValueError, match="amsgrad"):
        FusedAdam([torch.zeros(2)], amsgrad=True)
