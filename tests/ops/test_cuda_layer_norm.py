"""The fused_layer_norm CUDA kernels behind accelops::add_layer_norm_fwd/bwd against F.layer_norm in
float64; GPU tests are skipped without CUDA."""
import pytest
import torch
import torch.nn.functional as F

layer_norm_ops = pytest.importorskip("accelops.ops.layer_norm_ops")
from accelops.ops import layer_norm_cuda  # noqa: E402  (registers the CUDA kernels)

EPS = 1e-5
# Tolerances against float64, for outputs stored in each dtype.
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
       torch.float16: dict(rtol=5e-3, atol=5e-3)}
# Row sizes: 1, odd (scalar path), small, cached in registers, and streamed (65536 and beyond).
ROW_SIZES = [1, 7, 64, 1000, 1024, 4096, 8192, 16392, 65536, 70001]


def test_importing_registers_cuda_kernels():
    for op in ("accelops::add_layer_norm_fwd", "accelops::add_layer_norm_bwd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op


@pytest.fixture(scope="module")
def kernel():
    """Fail (not fall back) when the CUDA op does not build."""
    module = layer_norm_cuda._load()
    assert module is not None, "the fused_layer_norm CUDA op did not build or load"
    return module


def rows_for(n):
    return 37 if n <= 8192 else 5


def inputs(rows, n, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen, device="cuda") * scale + shift).to(dtype)

    return rnd(rows, n, shift=0.5), rnd(rows, n), rnd(n, scale=0.5, shift=1.0), rnd(n, scale=0.1), rnd(rows, n)


def reference(x, r, w, b, dy):
    """float64 forward and autograd backward of layer_norm(x + r) with the sum rounded like torch's."""
    s = x + r if r is not None else x
    s64 = s.double().requires_grad_()
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    y = F.layer_norm(s64, (s.shape[-1],), w64, b64, EPS)
    y.backward(dy.double())
    var, mean = torch.var_mean(s.double(), dim=-1, unbiased=False)
    return s, y.detach(), mean, torch.rsqrt(var + EPS), s64.grad, w64.grad, b64.grad


def check(got, want, dtype, what, scale=1.0):
    tol = {k: v * scale for k, v in TOL[dtype].items()}
    torch.testing.assert_close(got.double(), want.double(), **tol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n", ROW_SIZES)
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.usefixtures("kernel")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_and_backward_match_layer_norm(dtype, n, with_residual):
    x, r, w, b, dy = inputs(rows_for(n), n, dtype)
    r = r if with_residual else None
    y, s, mean, rstd = torch.ops.accelops.add_layer_norm_fwd(x, r, w, b, EPS)
    s_ref, y_ref, mean_ref, rstd_ref, gx_ref, gw_ref, gb_ref = reference(x, r, w, b, dy)
    if with_residual:
        assert torch.equal(s, s_ref)
    else:
        assert s.numel() == 0
    check(y, y_ref, dtype, "y")
    torch.testing.assert_close(mean.double(), mean_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rstd.double(), rstd_ref, rtol=1e-4, atol=1e-4)
    gx, gw, gb = torch.ops.accelops.add_layer_norm_bwd(dy, s if with_residual else x, mean, rstd, w)
    assert gw.dtype == w.dtype and gb.dtype == w.dtype
    check(gx, gx_ref, dtype, "grad_input")
    scale = max(1.0, rows_for(n) ** 0.5)  # column sums of rows_for(n) terms
    check(gw, gw_ref, dtype, "grad_weight", scale)
    check(gb, gb_ref, dtype, "grad_bias", scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.usefixtures("kernel")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_many_rows_and_leading_dims(dtype):
    """Grid-stride over rows and grad_weight partials summed over many blocks."""
    x, r, w, b, dy = inputs(6000, 1024, dtype, seed=1)
    shape = (4, 1500, 1024)
    x, r, dy = x.view(shape), r.view(shape), dy.view(shape)
    y, s, mean, rstd = torch.ops.accelops.add_layer_norm_fwd(x, r, w, b, EPS)
    assert y.shape == shape and mean.shape == (6000,)
    _, y_ref, _, _, gx_ref, gw_ref, gb_ref = reference(x, r, w, b, dy)
    check(y, y_ref, dtype, "y")
    gx, gw, gb = torch.ops.accelops.add_layer_norm_bwd(dy, s, mean, rstd, w)
    check(gx, gx_ref, dtype, "grad_input")
    check(gw, gw_ref, dtype, "grad_weight", scale=6000**0.5)
    check(gb, gb_ref, dtype, "grad_bias", scale=6000**0.5)


@pytest.mark.usefixtures("kernel")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_misaligned_rows_use_the_scalar_path():
    buf = torch.randn(9 * 512 + 1, device="cuda", dtype=torch.bfloat16)
    x = buf[1:].view(9, 512)  # contiguous, 2 bytes past an aligned address
    _, r, w, b, dy = inputs(9, 512, torch.bfloat16)
    y, s, mean, rstd = torch.ops.accelops.add_layer_norm_fwd(x, r, w, b, EPS)
    _, y_ref, _, _, gx_ref, gw_ref, _ = reference(x, r, w, b, dy)
    check(y, y_ref, torch.bfloat16, "y")
    gx, gw, _ = torch.ops.accelops.add_layer_norm_bwd(dy, s, mean, rstd, w)
    check(gx, gx_ref, torch.bfloat16, "grad_input")
    check(gw, gw_ref, torch.bfloat16, "grad_weight", scale=3.0)


@pytest.mark.usefixtures("kernel")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compile_fullgraph_traces_the_op():
    x, r, w, b, _ = inputs(64, 4096, torch.bfloat16, seed=2)

    def fn(x, r, w, b):
        return torch.ops.accelops.add_layer_norm_fwd(x, r, w, b, EPS)[0]

    torch.testing.assert_close(torch.compile(fn, fullgraph=True)(x, r, w, b), fn(x, r, w, b), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernel_rejects_bad_inputs(kernel):
    x = torch.randn(8, 16, device="cuda")
    w, b = torch.ones(16, device="cuda"), torch.zeros(16, device="cuda")
    with pytest.raises(RuntimeError, match="contiguous"):
        kernel.add_layer_norm_fwd(x.t().contiguous().t(), None, w, b, EPS)
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        kernel.add_layer_norm_fwd(x.double(), None, w.double(), b.double(), EPS)
    with pytest.raises(RuntimeError, match="shape"):
        kernel.add_layer_norm_fwd(x, None, torch.ones(15, device="cuda"), b, EPS)
    with pytest.raises(RuntimeError, match="residual"):
        kernel.add_layer_norm_fwd(x, torch.randn(8, 15, device="cuda"), w, b, EPS)
