"""The fused_layer_norm CUDA kernels behind accelops::add_layer_norm_fwd/bwd against F.layer_norm in
float64; GPU tests are skipped without CUDA."""
import pytest
import torch
from layer_norm_reference import EPS, check, check_forward_and_backward, reference
from layer_norm_reference import inputs as reference_inputs

layer_norm_ops = pytest.importorskip("accelops.ops.layer_norm.ops")
from accelops.ops.layer_norm import cuda as layer_norm_cuda  # noqa: E402  (registers the CUDA kernels)

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
    return reference_inputs(rows, n, dtype, seed, device="cuda")


def _fwd(x, r, w, b):
    return torch.ops.accelops.add_layer_norm_fwd(x, r, w, b, EPS)


def _bwd(dy, inp, mean, rstd, w):
    return torch.ops.accelops.add_layer_norm_bwd(dy, inp, mean, rstd, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n", ROW_SIZES)
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.usefixtures("kernel")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_and_backward_match_layer_norm(dtype, n, with_residual):
    x, r, w, b, dy = inputs(rows_for(n), n, dtype)
    _, s, _, _ = check_forward_and_backward(_fwd, _bwd, x, r if with_residual else None, w, b, dy)
    if not with_residual:
        assert s.numel() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.usefixtures("kernel")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_many_rows_and_leading_dims(dtype):
    """Grid-stride over rows and grad_weight partials summed over many blocks."""
    x, r, w, b, dy = inputs(6000, 1024, dtype, seed=1)
    shape = (4, 1500, 1024)
    x, r, dy = x.view(shape), r.view(shape), dy.view(shape)
    y, _, mean, _ = check_forward_and_backward(_fwd, _bwd, x, r, w, b, dy)
    assert y.shape == shape and mean.shape == (6000,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.usefixtures("kernel")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_many_streamed_rows(dtype):
    """Streamed rows over many row groups: the backward's column kernel sums several rows per lane
    in several parts."""
    check_forward_and_backward(_fwd, _bwd, *inputs(600, 16392, dtype, seed=5))


@pytest.mark.usefixtures("kernel")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_misaligned_streamed_16bit_rows():
    buf = torch.randn(5 * 20000 + 1, device="cuda", dtype=torch.float16)
    x = buf[1:].view(5, 20000)  # contiguous, 2 bytes past an aligned address: element-wise streamed paths
    _, r, w, b, dy = inputs(5, 20000, torch.float16, seed=6)
    y, s, mean, rstd = torch.ops.accelops.add_layer_norm_fwd(x, r, w, b, EPS)
    _, y_ref, _, _, gx_ref, gw_ref, _ = reference(x, r, w, b, dy)
    check(y, y_ref, torch.float16, "y")
    s_misaligned = torch.empty_like(buf)[1:].view(5, 20000)
    s_misaligned.copy_(s)
    gx, gw, _ = torch.ops.accelops.add_layer_norm_bwd(dy, s_misaligned, mean, rstd, w)
    check(gx, gx_ref, torch.float16, "grad_input")
    check(gw, gw_ref, torch.float16, "grad_weight", scale=3.0)


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
def test_kernel_last_line_checks_raise(kernel):
    """The extension's own checks (constant messages) raise instead of crashing."""
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


# --- Bad input: a Python error before the extension is called (its checks are a constant-message last
# line). The checks are device-independent except the device itself, so they run here on meta tensors
# (no GPU needed) and again on CUDA tensors through the op.

def _meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


BAD_FWD = {
    # name: (x, residual, weight, bias) maker taking a tensor factory, expected exception, message pattern
    "float64": (lambda t: (t(4, 8, dtype=torch.float64), None, t(8, dtype=torch.float64), t(8, dtype=torch.float64)),
                TypeError, "float32, bfloat16 or float16"),
    "int": (lambda t: (t(4, 8, dtype=torch.int32), None, t(8), t(8)), TypeError, "float32, bfloat16 or float16"),
    "0-dim x": (lambda t: (t(), None, t(1), t(1)), ValueError, "shape \\[..., N\\]"),
    "empty rows": (lambda t: (t(4, 0), None, t(0), t(0)), ValueError, "N > 0"),
    "weight shape": (lambda t: (t(4, 8), None, t(7), t(8)), ValueError, "weight must have shape \\[8\\]"),
    "bias 2-d": (lambda t: (t(4, 8), None, t(8), t(1, 8)), ValueError, "bias must have shape \\[8\\]"),
    "residual shape": (lambda t: (t(4, 8), t(4, 9), t(8), t(8)), ValueError, "residual must have x's shape"),
    "residual dtype": (lambda t: (t(4, 8), t(4, 8, dtype=torch.float16), t(8), t(8)), TypeError,
                       "residual has dtype"),
    "weight dtype": (lambda t: (t(4, 8, dtype=torch.bfloat16), None, t(8), t(8, dtype=torch.bfloat16)), TypeError,
                     "weight has dtype"),
    "weight on cpu": (lambda t: (t(4, 8), None, torch.ones(8), t(8)), ValueError, "weight is on cpu"),
    "row too large": (lambda t: (_meta(1, 2**30 + 1), None, _meta(2**30 + 1), _meta(2**30 + 1)), ValueError,
                      "at most 2\\*\\*30"),
}


@pytest.mark.parametrize("case", sorted(BAD_FWD))
def test_cuda_forward_rejects_bad_input_before_the_kernel(case, monkeypatch):
    make, exc, match = BAD_FWD[case]
    monkeypatch.setattr(layer_norm_cuda, "_load", lambda: pytest.fail("the extension must not be reached"))
    x, r, w, b = make(_meta)
    with pytest.raises(exc, match=match):
        layer_norm_cuda._fwd_cuda(x, r, w, b, EPS)


def test_cuda_forward_rejects_tensors_off_cuda(monkeypatch):
    monkeypatch.setattr(layer_norm_cuda, "_load", lambda: pytest.fail("the extension must not be reached"))
    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        layer_norm_cuda._fwd_cuda(_meta(4, 8), None, _meta(8), _meta(8), EPS)
    with pytest.raises(ValueError, match="CUDA device"):
        layer_norm_cuda._bwd_cuda(_meta(4, 8), _meta(4, 8), _meta(4), _meta(4), _meta(8))


def _bwd_args(t):
    return dict(grad_y=t(4, 8), inp=t(4, 8), mean=t(4), rstd=t(4), weight=t(8))


BAD_BWD = {
    "grad_y shape": (dict(grad_y=(4, 9)), ValueError, "grad_y must match input"),
    "grad_y dtype": (dict(grad_y=((4, 8), torch.float16)), ValueError, "grad_y must match input"),
    "mean rows": (dict(mean=(5,)), ValueError, "mean must be float32 of shape \\[4\\]"),
    "rstd dtype": (dict(rstd=((4,), torch.bfloat16)), ValueError, "rstd must be float32"),
    "weight shape": (dict(weight=(9,)), ValueError, "weight must be"),
    "input dtype": (dict(inp=((4, 8), torch.float64)), TypeError, "input must be float32"),
    "empty rows": (dict(inp=(4, 0), grad_y=(4, 0), weight=(0,)), ValueError, "0 < N"),
    "row too large": (dict(inp=(1, 2**30 + 1), grad_y=(1, 2**30 + 1), weight=(2**30 + 1,), mean=(1,), rstd=(1,)),
                      ValueError, "0 < N <= 2\\*\\*30"),
}


@pytest.mark.parametrize("case", sorted(BAD_BWD))
def test_cuda_backward_rejects_bad_input_before_the_kernel(case, monkeypatch):
    edits, exc, match = BAD_BWD[case]
    monkeypatch.setattr(layer_norm_cuda, "_load", lambda: pytest.fail("the extension must not be reached"))
    args = _bwd_args(_meta)
    for name, spec in edits.items():
        shape, dtype = spec if isinstance(spec[0], tuple) else (spec, torch.float32)
        args[name] = _meta(*shape, dtype=dtype)
    with pytest.raises(exc, match=match):
        layer_norm_cuda._bwd_cuda(args["grad_y"], args["inp"], args["mean"], args["rstd"], args["weight"])


@pytest.mark.parametrize("case", ["weight shape", "residual shape", "float64", "weight on cpu"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_op_rejects_bad_input_on_cuda(kernel, case):
    make, exc, match = BAD_FWD[case]

    def cuda_tensor(*shape, dtype=torch.float32):
        return torch.randn(shape, device="cuda").to(dtype)

    x, r, w, b = make(cuda_tensor)
    with pytest.raises(exc, match=match):
        torch.ops.accelops.add_layer_norm_fwd(x, r, w, b, EPS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_op_backward_rejects_bad_input_on_cuda(kernel):
    x, _, w, b, dy = inputs(4, 64, torch.float32)
    _, _, mean, rstd = torch.ops.accelops.add_layer_norm_fwd(x, None, w, b, EPS)
    with pytest.raises(ValueError, match="mean must be float32"):
        torch.ops.accelops.add_layer_norm_bwd(dy, x, mean[:3], rstd, w)
    with pytest.raises(ValueError, match="rstd is on cpu"):
        torch.ops.accelops.add_layer_norm_bwd(dy, x, mean, rstd.cpu(), w)
    with pytest.raises(ValueError, match="grad_y must match"):
        torch.ops.accelops.add_layer_norm_bwd(dy[:, :32], x, mean, rstd, w)


@pytest.mark.usefixtures("kernel")
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_strided_inputs_are_read_through_a_copy():
    x, r, w, b, dy = inputs(64, 48, torch.float32, seed=4)
    xt = x.t().contiguous().t()  # same values, column-major
    wt = torch.stack([w, w], 1)[:, 0]  # stride 2
    y, s, mean, rstd = torch.ops.accelops.add_layer_norm_fwd(xt, r, wt, b, EPS)
    y_ref, s_ref, _, _ = torch.ops.accelops.add_layer_norm_fwd(x, r, w, b, EPS)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    gx, gw, gb = torch.ops.accelops.add_layer_norm_bwd(dy.t().contiguous().t(), s, mean, rstd, wt)
    gx_ref, gw_ref, gb_ref = torch.ops.accelops.add_layer_norm_bwd(dy, s_ref, mean, rstd, w)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)
    torch.testing.assert_close(gw, gw_ref, rtol=0, atol=0)
