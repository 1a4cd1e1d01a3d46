"""Fused residual-add + layer norm on CPU (kernel and forced fallback) against F.layer_norm(x + residual).

References run in float64 on the same inputs, with s = x + residual rounded to the input dtype first
(that is what ``F.layer_norm(x + residual)`` normalises). Tolerances, per element:
* float32: rtol/atol 1e-5 (fp32 row statistics over <= 1031 elements; a few fp32 ulps per output).
* bfloat16: outputs are rounded to bf16 (half an ulp, 2**-8 relative) after fp32 math; rtol 2**-7 plus
  atol 2**-6 for outputs that cancel to near zero (y = xhat * w + b, grad sums over rows).
"""
import warnings

import pytest
import torch
import torch.nn.functional as F

from accelops.ops.layer_norm.module import FusedLayerNorm
from accelops.ops.layer_norm.ops import CPU_LOADER, add_layer_norm_fwd, fused_add_layer_norm, layer_norm_path
from helpers import kernel_or_fallback

ROW_SIZES = [1, 7, 64, 100, 1031]  # 1031: not a multiple of any vector width (4, 8, 16)
_TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2**-7, atol=2**-6)}


@pytest.fixture(scope="session")
def ln_kernel():
    """Build (or load from the JIT cache) the cpu_layer_norm op once per session."""
    pytest.importorskip("accelops.op_builder.builder", reason="the op build engine is not in this tree")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed build must fail the test, not fall back silently
        module = CPU_LOADER.module()
    assert module is not None
    return module


@pytest.fixture(params=["kernel", "torch"])
def path(request, monkeypatch):
    """Run a test once on the compiled kernel and once on the forced pure-torch fallback."""
    return kernel_or_fallback(request, monkeypatch, "ln_kernel")


def _inputs(rows, n, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=gen).to(dtype).requires_grad_()  # noqa: E731
    return make(rows, n), make(rows, n), make(n), make(n)


def _reference(x, r, w, b, gy, eps):
    """float64 F.layer_norm(x + r) with the sum rounded to x's dtype; returns y and the four grads."""
    leaves = [t.detach().double().requires_grad_() for t in (x, r, w, b)]
    s = leaves[0] + leaves[1]
    s = s + (s.detach().to(x.dtype).double() - s.detach())  # round the value, keep the gradient path
    y = F.layer_norm(s, (x.shape[-1],), leaves[2], leaves[3], eps)
    y.backward(gy.double())
    return y.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", ROW_SIZES)
def test_forward_backward_match_f_layer_norm(path, dtype, n):
    x, r, w, b = _inputs(37, n, dtype)
    y, s = fused_add_layer_norm(x, r, w, b, 1e-5, return_sum=True)
    gy = torch.randn(y.shape).to(dtype)
    y.backward(gy)
    y_ref, grads_ref = _reference(x, r, w, b, gy, 1e-5)
    assert y.dtype == dtype and s.dtype == dtype
    assert torch.equal(s.detach(), (x + r).detach()), "s must be x + residual in the input dtype"
    torch.testing.assert_close(y.double(), y_ref, **_TOL[dtype])
    for got, want in zip((x.grad, r.grad, w.grad, b.grad), grads_ref):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, **_TOL[dtype])
    assert layer_norm_path() == path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_without_residual_and_3d_input(path, dtype):
    x, _, w, b = _inputs(2 * 9, 100, dtype)
    x3 = x.detach().reshape(2, 9, 100).requires_grad_()
    y = fused_add_layer_norm(x3, None, w, b, 1e-6)
    y.sum().backward()
    xr = x3.detach().double().requires_grad_()
    wr, br = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    y_ref = F.layer_norm(xr, (100,), wr, br, 1e-6)
    y_ref.sum().backward()
    assert y.shape == (2, 9, 100)
    torch.testing.assert_close(y.double(), y_ref, **_TOL[dtype])
    torch.testing.assert_close(x3.grad.double(), xr.grad, **_TOL[dtype])
    torch.testing.assert_close(w.grad.double(), wr.grad, **_TOL[dtype])


def test_sum_output_gradient_flows_to_both_inputs(path):
    """When s is used downstream (the next residual), its gradient adds to x's and residual's."""
    x, r, w, b = _inputs(5, 33, torch.float32)
    y, s = fused_add_layer_norm(x, r, w, b, return_sum=True)
    (y.sum() + (s * 3).sum()).backward()
    xr, rr = x.detach().clone().requires_grad_(), r.detach().clone().requires_grad_()
    sr = xr + rr
    (F.layer_norm(sr, (33,), w.detach(), b.detach()).sum() + (sr * 3).sum()).backward()
    torch.testing.assert_close(x.grad, xr.grad, **_TOL[torch.float32])
    torch.testing.assert_close(r.grad, rr.grad, **_TOL[torch.float32])


def test_module_matches_nn_layer_norm(path):
    torch.manual_seed(0)
    ours, ref = FusedLayerNorm(48), torch.nn.LayerNorm(48)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
        ref.load_state_dict(ours.state_dict())
    x, r = torch.randn(4, 6, 48), torch.randn(4, 6, 48)
    torch.testing.assert_close(ours(x, r), ref(x + r), **_TOL[torch.float32])
    torch.testing.assert_close(ours(x), ref(x), **_TOL[torch.float32])


def test_non_contiguous_input_is_read_not_written(path):
    x, r, w, b = _inputs(16, 12, torch.float32)
    xt = x.detach().t()  # [12, 16] view
    before = xt.clone()
    y = fused_add_layer_norm(xt, None, torch.ones(16), torch.zeros(16))
    torch.testing.assert_close(y, F.layer_norm(before, (16,)), **_TOL[torch.float32])
    assert torch.equal(xt, before)


def test_runs_under_torch_compile_fullgraph(path):
    """fullgraph=True raises on any graph break; fwd and bwd must match eager."""
    x, r, w, b = _inputs(8, 40, torch.float32)
    mod = FusedLayerNorm(40)
    compiled = torch.compile(lambda x, r: mod(x, r).square().sum(), fullgraph=True, backend="aot_eager")
    loss = compiled(x, r)
    loss.backward()
    xr, rr = x.detach().clone().requires_grad_(), r.detach().clone().requires_grad_()
    ref = F.layer_norm(xr + rr, (40,)).square().sum()
    ref.backward()
    torch.testing.assert_close(loss, ref, **_TOL[torch.float32])
    torch.testing.assert_close(x.grad, xr.grad, **_TOL[torch.float32])


def test_shows_up_in_profiles_by_name(path):
    x, r, w, b = _inputs(4, 16, torch.float32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fused_add_layer_norm(x, r, w, b).sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert "accelops::add_layer_norm_fwd" in names and "accelops::add_layer_norm_bwd" in names


# ---------------------------------------------------------------- bad input
def test_rejects_wrong_shapes():
    x, r = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"weight must have shape \[8\]"):
        fused_add_layer_norm(x, r, torch.ones(7), torch.zeros(8))
    with pytest.raises(ValueError, match="residual must have x's shape"):
        fused_add_layer_norm(x, torch.randn(4, 9), torch.ones(8), torch.zeros(8))
    with pytest.raises(ValueError, match="N > 0"):
        fused_add_layer_norm(torch.randn(4, 0), None, torch.ones(0), torch.zeros(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_over_16_mib_match_too(path, dtype):
    """Outputs this large are written with non-temporal stores (and advised as huge pages) by the kernel."""
    rows, n = 8192, 1024 if dtype == torch.float32 else 2048
    gen = torch.Generator().manual_seed(3)
    x, r = (torch.randn(rows, n, generator=gen).to(dtype) for _ in range(2))
    w, b = torch.randn(n).to(dtype), torch.randn(n).to(dtype)
    y, s = fused_add_layer_norm(x, r, w, b, 1e-5, return_sum=True)
    assert torch.equal(s, x + r)
    ref = F.layer_norm((x + r).float(), (n,), w.float(), b.float(), 1e-5)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 2e-2}
    torch.testing.assert_close(y.float(), ref, **tol)


def test_rejects_bad_argument_types_and_eps():
    x = torch.randn(4, 8)
    with pytest.raises(TypeError, match="weight must be a tensor, got NoneType"):
        fused_add_layer_norm(x, None, None, torch.zeros(8))
    with pytest.raises(TypeError, match="x must be a tensor, got list"):
        fused_add_layer_norm([[1.0] * 8], None, torch.ones(8), torch.zeros(8))
    for eps in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            fused_add_layer_norm(x, None, torch.ones(8), torch.zeros(8), eps=eps)


def test_rows_with_a_large_offset_are_as_accurate_as_torch(path):
    """Against a float64 reference: the mean's rounding error must not grow with the row's offset."""
    n = 4096
    w, b = torch.randn(n), torch.randn(n)
    for offset in (1e3, 1e4, 1e5):
        x = torch.randn(8, n, generator=torch.Generator().manual_seed(0)) + offset
        r = torch.randn(8, n, generator=torch.Generator().manual_seed(1))
        s = x + r
        exact = F.layer_norm(s.double(), (n,), w.double(), b.double(), 1e-5)
        ours = fused_add_layer_norm(x, r, w, b, 1e-5)
        torch_error = (F.layer_norm(s, (n,), w, b, 1e-5).double() - exact).abs().max().item()
        our_error = (ours.double() - exact).abs().max().item()
        assert our_error <= 1.5 * torch_error + 1e-6, (offset, our_error, torch_error)


def test_rejects_mismatched_dtypes_and_devices():
    x = torch.randn(4, 8)
    with pytest.raises(TypeError, match="residual has dtype torch.bfloat16"):
        fused_add_layer_norm(x, x.bfloat16(), torch.ones(8), torch.zeros(8))
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        fused_add_layer_norm(x.double(), None, torch.ones(8).double(), torch.zeros(8).double())
    with pytest.raises(ValueError, match="meta"):
        fused_add_layer_norm(x, None, torch.ones(8, device="meta"), torch.zeros(8))


def test_meta_tensors_use_the_fake_impl():
    """Shapes and dtypes propagate without running a kernel (what torch.compile relies on)."""
    x = torch.empty(3, 5, 64, device="meta", dtype=torch.bfloat16)
    y, s, mean, rstd = add_layer_norm_fwd(x, x, torch.empty(64, device="meta", dtype=torch.bfloat16),
                                          torch.empty(64, device="meta", dtype=torch.bfloat16), 1e-5)
    assert y.shape == s.shape == (3, 5, 64) and y.dtype == torch.bfloat16
    assert mean.shape == rstd.shape == (15,) and mean.dtype == torch.float32


def test_kernel_refuses_bad_buffers(ln_kernel):
    """Direct calls into the extension get a Python error, not a crash."""
    with pytest.raises(RuntimeError, match="contiguous"):
        ln_kernel.add_layer_norm_fwd(torch.randn(8, 4).t(), None, torch.ones(8), torch.zeros(8), 1e-5)
    with pytest.raises(RuntimeError, match="elements"):
        ln_kernel.add_layer_norm_bwd(torch.randn(4, 8), torch.randn(4, 8), torch.zeros(3), torch.ones(4),
                                     torch.ones(8))


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("which", ["x", "residual", "weight"])
def test_a_sparse_input_is_a_clear_error(which):
    args = {"x": torch.randn(4, 8), "residual": torch.randn(4, 8), "weight": torch.ones(8), "bias": torch.zeros(8)}
    args[which] = args[which].to_sparse()
    with pytest.raises(ValueError, match=f"fused_add_layer_norm: {which} must be a dense \\(strided\\) tensor"):
        fused_add_layer_norm(args["x"], args["residual"], args["weight"], args["bias"])
