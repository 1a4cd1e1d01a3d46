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
    module = fa._load_cuda_module()
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


def test_kernel_rejects_bad_state_and_non_contiguous(kernel):
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
