"""FusedAdam on CPU (the torch fallback path) against torch.optim.Adam/AdamW, plus argument errors."""
import copy
import warnings

import pytest
import torch

from accelops.ops import fused_adam as fa
from accelops.ops.fused_adam import FusedAdam

SHAPES = [(7,), (33, 5), (1,), (3, 4, 5)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
       torch.float16: dict(rtol=1e-3, atol=1e-5)}


@pytest.fixture(autouse=True)
def quiet_fallback():
    """The CPU path warns once by design; keep the test output clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def make_params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in SHAPES]


def clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


def set_grads(groups, step, skip=()):
    """Same random grads for every param list; params whose index is in skip get none."""
    gen = torch.Generator().manual_seed(1000 + step)
    grads = [torch.randn(p.shape, generator=gen) for p in groups[0]]
    for params in groups:
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if i in skip else g.to(p.dtype, copy=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("adam_w_mode", [True, False])
def test_matches_torch_adam(dtype, adam_w_mode):
    ours = make_params(dtype)
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, adam_w_mode=adam_w_mode)
    cls = torch.optim.AdamW if adam_w_mode else torch.optim.Adam
    ref_opt = cls(ref, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, fused=True)
    for step in range(6):
        set_grads([ours, ref], step)
        opt.step()
        ref_opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, **TOL[dtype])
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt.state[p][key], ref_opt.state[r][key], **TOL[dtype])


def test_per_parameter_step_counts():
    ours = make_params(torch.float32)
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.0)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.0, foreach=False)
    for step in range(5):
        set_grads([ours, ref], step, skip={1} if step % 2 else {0, 3})
        opt.step()
        ref_opt.step()
    for p, r in zip(ours, ref):
        assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
        assert float(opt.state[p]["step"]) == float(ref_opt.state[r]["step"])
        torch.testing.assert_close(p, r, **TOL[torch.float32])
    assert float(opt.state[ours[0]]["step"]) != float(opt.state[ours[1]]["step"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp32_state_for_16bit_params(dtype):
    """Each step equals torch AdamW on an fp32 copy of the 16-bit param, rounded back."""
    ours = make_params(dtype)
    ref16 = clone_params(ours)
    ref32 = [p.detach().float().requires_grad_() for p in ours]
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.1, state_dtype=torch.float32)
    ref_opt = torch.optim.AdamW(ref32, lr=1e-2, weight_decay=0.1, foreach=False)
    for step in range(5):
        set_grads([ours, ref16], step)
        with torch.no_grad():
            for r16, r32 in zip(ref16, ref32):
                r32.copy_(r16.float())
                r32.grad = r16.grad.float()
        opt.step()
        ref_opt.step()
        with torch.no_grad():
            for r16, r32 in zip(ref16, ref32):
                r16.copy_(r32)
    for p, r16, r32 in zip(ours, ref16, ref32):
        assert opt.state[p]["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(p, r16, **TOL[dtype])
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref_opt.state[r32]["exp_avg_sq"], rtol=1e-5, atol=1e-7)


def test_without_bias_correction_matches_float64_formula():
    ours = make_params(torch.float32)
    ref = [p.detach().double() for p in ours]
    m = [torch.zeros_like(r) for r in ref]
    v = [torch.zeros_like(r) for r in ref]
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.99, 1e-8, 0.01
    opt = FusedAdam(ours, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, bias_correction=False)
    for step in range(4):
        set_grads([ours], step)
        for i, p in enumerate(ours):
            g = p.grad.double()
            ref[i] = ref[i] * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            ref[i] = ref[i] - lr * m[i] / (v[i].sqrt() + eps)
        opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p.double(), r, rtol=1e-5, atol=1e-6)


def test_found_inf_skips_the_step_and_grad_scale_unscales():
    ours = make_params(torch.float32)
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.01, fused=True)
    set_grads([ours, ref], 0)
    before = [p.detach().clone() for p in ours]
    opt.found_inf = torch.ones(())
    opt.step()
    for p, b in zip(ours, before):
        assert torch.equal(p, b)
        assert float(opt.state[p]["step"]) == 0.0
    opt.found_inf = torch.zeros(())
    opt.grad_scale = torch.full((), 64.0)
    for p in ours:
        p.grad.mul_(64.0)
    opt.step()
    ref_opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, **TOL[torch.float32])


def test_grad_scaler_matches_torch():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    ref_model = torch.nn.Linear(8, 4)
    ref_model.load_state_dict(model.state_dict())
    opt = FusedAdam(model.parameters(), lr=1e-2, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    scaler, ref_scaler = torch.amp.GradScaler("cpu", init_scale=256.0), torch.amp.GradScaler("cpu", init_scale=256.0)
    for _ in range(3):
        x = torch.randn(16, 8)
        for mod, o, s in ((model, opt, scaler), (ref_model, ref_opt, ref_scaler)):
            o.zero_grad()
            s.scale(mod(x).square().mean()).backward()
            s.step(o)
            s.update()
    for p, r in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, r, **TOL[torch.float32])


def test_state_dict_loads_into_torch_adamw():
    ours = make_params(torch.float32)
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.01)
    for step in range(3):
        set_grads([ours], step)
        opt.step()
    with torch.no_grad():
        for p, r in zip(ours, ref):
            r.copy_(p)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.01, foreach=False)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # state_dict() shares the tensors
    set_grads([ours, ref], 3)
    opt.step()
    ref_opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, **TOL[torch.float32])


def test_load_state_dict_keeps_fp32_state_of_16bit_params():
    ours = make_params(torch.bfloat16)
    opt = FusedAdam(ours, lr=1e-2, state_dtype=torch.float32)
    set_grads([ours], 0)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    other = FusedAdam(clone_params(ours), lr=1e-2, state_dtype=torch.float32)
    other.load_state_dict(saved)
    for p, q in zip(ours, other.param_groups[0]["params"]):
        for key in ("exp_avg", "exp_avg_sq"):
            assert other.state[q][key].dtype == torch.float32
            assert torch.equal(other.state[q][key], opt.state[p][key])
        assert other.state[q]["step"].dtype == torch.float32 and float(other.state[q]["step"]) == 1.0


def test_fallback_warns_once(monkeypatch):
    monkeypatch.setattr(fa, "_warned", set())
    params = make_params(torch.float32)
    opt = FusedAdam(params)
    set_grads([params], 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
        opt.step()
    messages = [str(w.message) for w in caught if "fallback" in str(w.message)]
    assert len(messages) == 1 and "cpu" in messages[0]


def test_cuda_module_build_failure_warns_once_and_is_not_retried(monkeypatch):
    import accelops.accelerator as accelerator

    calls = []

    class NoCompiler:
        def create_op_builder(self, name):
            calls.append(name)
            raise RuntimeError("nvcc not found")

    monkeypatch.setattr(accelerator, "get_accelerator", lambda: NoCompiler())
    monkeypatch.setattr(fa, "_cuda_module", None)
    monkeypatch.setattr(fa, "_cuda_load_failed", False)
    monkeypatch.setattr(fa, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fa._load_cuda_module() is None
        assert fa._load_cuda_module() is None
    assert calls == ["FusedAdamBuilder"]
    assert [str(w.message) for w in caught if "unavailable" in str(w.message)] == [
        "FusedAdam: the fused_adam CUDA op is unavailable (nvcc not found); using the torch fallback"]


def test_op_traces_with_compile_fullgraph():
    gen = torch.Generator().manual_seed(3)
    tensors = [torch.randn(11, generator=gen) for _ in range(4)]

    def step(p, g, m, v, s):
        torch.ops.accelops.fused_adam_step_([p], [g], [m], [v], [s], 1e-2, 0.9, 0.999, 1e-8, 0.1, True, True,
                                            None, None)
        return p, m, v

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args_eager = [tensors[0].clone(), tensors[1], torch.zeros(11), torch.zeros(11), torch.ones(())]
    args_compiled = [t.clone() for t in args_eager]
    expected = step(*args_eager)
    got = compiled(*args_compiled)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    assert not torch.equal(args_compiled[0], tensors[0])  # the param was updated in place


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_sparse_grad_is_rejected():
    p = torch.zeros(5, requires_grad=True)
    p.grad = torch.sparse_coo_tensor([[1]], [1.0], (5,))
    with pytest.raises(RuntimeError, match="sparse"):
        FusedAdam([p]).step()


def test_non_contiguous_param_is_rejected():
    p = torch.randn(6, 4).t().requires_grad_()
    p.grad = torch.randn(6, 4).t()
    before = p.detach().clone()
    with pytest.raises(ValueError, match="contiguous"):
        FusedAdam([p]).step()
    assert torch.equal(p, before)


def test_unsupported_dtype_is_rejected():
    p = torch.randn(3, dtype=torch.float64, requires_grad=True)
    p.grad = torch.randn(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        FusedAdam([p]).step()


def test_mixed_devices_in_a_group_are_rejected():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, device="meta", requires_grad=True)
    a.grad = torch.randn(3)
    b.grad = torch.randn(3, device="meta")
    with pytest.raises(ValueError, match="device"):
        FusedAdam([a, b]).step()


@pytest.mark.parametrize("kwargs, match", [
    (dict(amsgrad=True), "amsgrad"), (dict(lr=-1.0), "learning rate"), (dict(betas=(1.0, 0.9)), "betas"),
    (dict(eps=-1.0), "epsilon"), (dict(weight_decay=-0.1), "weight_decay"),
    (dict(state_dtype=torch.float16), "state_dtype"),
])
def test_bad_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusedAdam([torch.zeros(2, requires_grad=True)], **kwargs)


def test_op_rejects_lists_of_different_lengths():
    t = torch.zeros(3)
    with pytest.raises(ValueError, match="same length"):
        fa.fused_adam_step_([t], [t], [t.clone()], [t.clone()], [], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True)
