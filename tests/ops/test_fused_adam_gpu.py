"""The fused_adam CUDA kernel against torch.optim.Adam/AdamW(fused=True); skipped without CUDA."""
import pytest
import torch

from accelops.ops import fused_adam as fa
from accelops.ops.fused_adam import FusedAdam

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# 16-bit storage: two units in the last place at the values' scale (~1). Torch rounds a few fp32
# intermediates differently (e.g. 1 - beta1), which flips roundings; cancellation in
# beta1 * m + (1 - beta1) * g carries such a flip into near-zero results as an absolute error.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=1.6e-2, atol=8e-3),
       torch.float16: dict(rtol=2e-3, atol=1e-3)}
# Odd sizes, a chunk edge, more than one launch table's worth of tensors (32) and of chunks (448 x 64K).
SHAPES = [(1,), (7,), (1023,), (4096, 33), (65536 + 3,), (300_001,)] + [(97,)] * 40 + [(30_000_001,)]


@pytest.fixture(scope="module", autouse=True)
def kernel():
    """Fail (not fall back) when the CUDA op does not build."""
    module = fa._STEP.module()
    assert module is not None, "the fused_adam CUDA op did not build or load"
    return module


def make_params(dtype, shapes=SHAPES, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(s, generator=gen, device="cuda").to(dtype).requires_grad_() for s in shapes]


def clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


def set_grads(groups, step, skip=()):
    gen = torch.Generator(device="cuda").manual_seed(1000 + step)
    grads = [torch.randn(p.shape, generator=gen, device="cuda") for p in groups[0]]
    for params in groups:
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if i in skip else g.to(p.dtype, copy=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("adam_w_mode", [True, False])
def test_matches_torch_fused_adam(dtype, adam_w_mode):
    ours = make_params(dtype)
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, adam_w_mode=adam_w_mode)
    cls = torch.optim.AdamW if adam_w_mode else torch.optim.Adam
    ref_opt = cls(ref, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, fused=True)
    for step in range(4):
        set_grads([ours, ref], step, skip={2} if step == 1 else ())
        opt.step()
        ref_opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, **TOL[dtype])
        torch.testing.assert_close(opt.state[p]["exp_avg"], ref_opt.state[r]["exp_avg"], **TOL[dtype])
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref_opt.state[r]["exp_avg_sq"], **TOL[dtype])
        assert float(opt.state[p]["step"]) == float(ref_opt.state[r]["step"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp32_state_for_16bit_params(dtype):
    """Each step equals torch's fused AdamW on an fp32 copy of the 16-bit param, rounded back."""
    shapes = [(5,), (1000, 3), (70_000,)]
    ours = make_params(dtype, shapes)
    ref16 = clone_params(ours)
    ref32 = [p.detach().float().requires_grad_() for p in ours]
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.1, state_dtype=torch.float32)
    ref_opt = torch.optim.AdamW(ref32, lr=1e-2, weight_decay=0.1, fused=True)
    for step in range(4):
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
        torch.testing.assert_close(opt.state[p]["exp_avg"], ref_opt.state[r32]["exp_avg"], rtol=1e-5, atol=1e-6)


def test_misaligned_tensors_take_the_scalar_path():
    storage = torch.randn(3 * 1001 + 1, device="cuda")  # params start 4 bytes past an aligned address
    params = [torch.nn.Parameter(storage[1 + i * 1001:1 + (i + 1) * 1001]) for i in range(3)]
    ref = clone_params(params)
    opt = FusedAdam(params, lr=1e-2, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.01, fused=True)
    for step in range(3):
        set_grads([params, ref], step)
        opt.step()
        ref_opt.step()
    for p, r in zip(params, ref):
        assert p.data_ptr() % 16 != 0
        torch.testing.assert_close(p, r, **TOL[torch.float32])


def test_found_inf_skips_and_grad_scale_unscales():
    ours = make_params(torch.float32, [(10,), (70_000,)])
    ref = clone_params(ours)
    opt = FusedAdam(ours, lr=1e-2, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.01, fused=True)
    set_grads([ours, ref], 0)
    before = [p.detach().clone() for p in ours]
    opt.found_inf = torch.ones((), device="cuda")
    opt.step()
    for p, b in zip(ours, before):
        assert torch.equal(p, b) and float(opt.state[p]["step"]) == 0.0
    opt.found_inf = torch.zeros((), device="cuda")
    opt.grad_scale = torch.full((), 128.0, device="cuda")
    for p in ours:
        p.grad.mul_(128.0)
    opt.step()
    ref_opt.step()
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, **TOL[torch.float32])


def test_compiled_step_traces_the_op():
    p, g = torch.randn(5000, device="cuda"), torch.randn(5000, device="cuda")

    def step(p, g, m, v, s):
        torch.ops.accelops.fused_adam_step_([p], [g], [m], [v], [s], 1e-2, 0.9, 0.999, 1e-8, 0.1, True, True,
                                            None, None)
        return p, m, v

    args = [p.clone(), g, torch.zeros_like(p), torch.zeros_like(p), torch.ones((), device="cuda")]
    args_c = [t.clone() for t in args]
    expected = step(*args)
    got = torch.compile(step, fullgraph=True)(*args_c)
    for e, o in zip(expected, got):
        torch.testing.assert_close(o, e, rtol=0, atol=0)


def _args(n=3, dtype=torch.float32):
    ps = [torch.randn(5, 2, device="cuda", dtype=dtype) for _ in range(n)]
    return dict(params=ps, grads=[torch.randn_like(p) for p in ps], exp_avgs=[torch.zeros_like(p) for p in ps],
                exp_avg_sqs=[torch.zeros_like(p) for p in ps], steps=[torch.ones((), device="cuda") for _ in ps])


def _strided(t):
    """A non-contiguous tensor of t's shape with defined values (uninitialised memory may hold NaNs, and a
    NaN is not equal to itself in the "nothing was updated" checks)."""
    return torch.zeros(t.shape[::-1], dtype=t.dtype, device=t.device).t()


# Bad input through the op on CUDA tensors: a Python error from accelops.ops.fused_adam, never the
# extension's (this once segfaulted: a formatted TORCH_CHECK message in a mismatched environment).
BAD = {
    "lengths": (lambda a: a["steps"].pop(), ValueError, "same length"),
    "grad on cpu": (lambda a: a["grads"].__setitem__(1, a["grads"][1].cpu()), ValueError, "device"),
    "state on cpu": (lambda a: a["exp_avgs"].__setitem__(2, a["exp_avgs"][2].cpu()), ValueError, "device"),
    "param 0 on cpu": (lambda a: a["params"].__setitem__(0, a["params"][0].cpu()), ValueError, "device"),
    "sparse grad": (lambda a: a["grads"].__setitem__(0, a["grads"][0].to_sparse()), RuntimeError, "dense"),
    "non-contiguous param": (lambda a: a["params"].__setitem__(1, _strided(a["params"][1])), ValueError,
                             "contiguous"),
    "non-contiguous grad": (lambda a: a["grads"].__setitem__(1, _strided(a["grads"][1])), ValueError, "contiguous"),
    "non-contiguous state": (lambda a: a["exp_avgs"].__setitem__(0, _strided(a["exp_avgs"][0])), ValueError,
                             "contiguous"),
    "float64": (lambda a: [a[k].__setitem__(0, a[k][0].double()) for k in
                           ("params", "grads", "exp_avgs", "exp_avg_sqs")], TypeError, "float64"),
    "grad dtype": (lambda a: a["grads"].__setitem__(0, a["grads"][0].half()), TypeError, "grads\\[0\\] has dtype"),
    "state dtype": (lambda a: [a[k].__setitem__(1, a[k][1].half()) for k in ("exp_avgs", "exp_avg_sqs")],
                    TypeError, "float32 or the param dtype"),
    "grad numel": (lambda a: a["grads"].__setitem__(2, torch.randn(7, device="cuda")), ValueError, "shape"),
    "state numel": (lambda a: a["exp_avg_sqs"].__setitem__(2, torch.zeros(3, device="cuda")), ValueError, "shape"),
    "step on cpu": (lambda a: a["steps"].__setitem__(0, torch.ones(())), ValueError, "one-element float32"),
    "step numel": (lambda a: a["steps"].__setitem__(0, torch.ones(2, device="cuda")), ValueError,
                   "one-element float32"),
    "grad_scale on cpu": (lambda a: a.__setitem__("grad_scale", torch.ones(())), ValueError, "grad_scale"),
    "found_inf numel": (lambda a: a.__setitem__("found_inf", torch.zeros(2, device="cuda")), ValueError,
                        "found_inf"),
}


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("case", sorted(BAD))
def test_op_rejects_bad_input_in_python(kernel, case):
    edit, exc, match = BAD[case]
    a = _args()
    edit(a)
    before = [p.clone() for p in a["params"]]
    with pytest.raises(exc, match=match):
        torch.ops.accelops.fused_adam_step_(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], a["steps"],
                                            1e-3, 0.9, 0.999, 1e-8, 0.0, True, True, a.get("grad_scale"),
                                            a.get("found_inf"))
    torch.cuda.synchronize()
    for p, b in zip(a["params"], before):
        assert torch.equal(p, b)


def test_optimizer_rejects_bad_state_in_python(kernel):
    p = torch.randn(10, device="cuda", requires_grad=True)
    p.grad = torch.randn_like(p)
    opt = FusedAdam([p])
    opt.step()
    opt.state[p]["exp_avg"] = opt.state[p]["exp_avg"].cpu()  # e.g. state left behind by hand
    with pytest.raises(ValueError, match="exp_avg is on cpu"):
        opt.step()
    opt.state[p]["exp_avg"] = torch.zeros(11, device="cuda")
    with pytest.raises(ValueError, match="shape"):
        opt.step()


def test_kernel_last_line_checks_raise(kernel):
    """The extension's own checks (constant messages) raise RuntimeError instead of crashing; run in
    a separate process on new machines: this is where a formatted message once segfaulted."""
    p = torch.randn(8, device="cuda", dtype=torch.bfloat16)
    g = torch.randn_like(p)
    step = torch.ones((), device="cuda")
    with pytest.raises(RuntimeError, match="state must be float32 or the param dtype"):
        kernel.fused_adam_step([p], [g], [torch.zeros(8, device="cuda", dtype=torch.float16)] * 1,
                               [torch.zeros(8, device="cuda", dtype=torch.float16)], [step],
                               1e-3, 0.9, 0.999, 1e-8, 0.0, True, True, None, None)
    q = torch.randn(8, 4, device="cuda").t()
    with pytest.raises(RuntimeError, match="contiguous"):
        kernel.fused_adam_step([q], [torch.randn(4, 8, device="cuda")], [torch.zeros(4, 8, device="cuda")],
                               [torch.zeros(4, 8, device="cuda")], [step], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True,
                               None, None)
    with pytest.raises(RuntimeError, match="same length"):
        kernel.fused_adam_step([p], [g], [], [], [], 1e-3, 0.9, 0.999, 1e-8, 0.0, True, True, None, None)
    with pytest.raises(RuntimeError, match="as many elements"):
        kernel.fused_adam_step([p], [g[:4]], [torch.zeros_like(p)], [torch.zeros_like(p)], [step],
                               1e-3, 0.9, 0.999, 1e-8, 0.0, True, True, None, None)


def test_mixed_devices_in_a_group_are_rejected():
    a = torch.randn(3, device="cuda", requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    a.grad, b.grad = torch.randn_like(a), torch.randn_like(b)
    with pytest.raises(ValueError, match="device"):
        FusedAdam([a, b]).step()


@pytest.mark.slow
def test_tensor_over_2_pow_31_elements():
    """64-bit indexing: the head and the tail of a 2**31 + 4099 element tensor update correctly."""
    n = 2**31 + 4099
    if torch.cuda.get_device_properties(0).total_memory < 24 * n:
        pytest.skip("needs about 24 bytes of GPU memory per element")
    p = torch.randn(n, device="cuda", dtype=torch.bfloat16).requires_grad_()
    p.grad = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    pieces = [slice(0, 70_000), slice(n - 70_003, n)]
    refs = [p.detach()[s].clone().requires_grad_() for s in pieces]
    for r, s in zip(refs, pieces):
        r.grad = p.grad[s].clone()
    opt = FusedAdam([p], lr=1e-2, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(refs, lr=1e-2, weight_decay=0.01, fused=True)
    opt.step()
    ref_opt.step()
    for r, s in zip(refs, pieces):
        torch.testing.assert_close(p.detach()[s], r, **TOL[torch.bfloat16])
        torch.testing.assert_close(opt.state[p]["exp_avg"][s], ref_opt.state[r]["exp_avg"], **TOL[torch.bfloat16])


def test_step_has_no_per_tensor_python_checks_but_direct_calls_do(kernel, monkeypatch):
    """FusedAdam.step lets the extension check its inputs (the per-step path stays cheap); a direct op
    call is validated in Python first."""
    calls = []
    validate = fa._STEP.check
    monkeypatch.setattr(fa._STEP, "check", lambda *a: calls.append(1) or validate(*a))
    params = make_params(torch.float32, [(10,), (70_000,)])
    set_grads([params], 0)
    opt = FusedAdam(params)
    opt.step()
    opt.step()
    assert calls == []
    a = _args()
    torch.ops.accelops.fused_adam_step_(a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], a["steps"],
                                        1e-3, 0.9, 0.999, 1e-8, 0.0, True, True, None, None)
    assert calls == [1]
