"""Inputs, float64 reference and tolerances shared by the add + layer norm kernel tests (the CUDA
kernels on a GPU and the same kernel sources under the host emulation in tests/cuda_emu)."""
import torch
import torch.nn.functional as F

EPS = 1e-5
# Tolerances against float64, for outputs stored in each dtype.
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
       torch.float16: dict(rtol=5e-3, atol=5e-3)}


def inputs(rows, n, dtype, seed=0, device="cpu"):
    """(x, r, w, b, dy): x shifted by 0.5, weights near 1, small biases; all of dtype on device."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen, device=device) * scale + shift).to(dtype)

    return rnd(rows, n, shift=0.5), rnd(rows, n), rnd(n, scale=0.5, shift=1.0), rnd(n, scale=0.1), rnd(rows, n)


def reference(x, r, w, b, dy):
    """float64 forward and autograd backward of layer_norm(x + r) with the sum rounded like torch's:
    (s, y, mean, rstd, grad_input, grad_weight, grad_bias)."""
    s = x + r if r is not None else x
    s64 = s.double().requires_grad_()
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    y = F.layer_norm(s64, (s.shape[-1],), w64, b64, EPS)
    y.backward(dy.double())
    var, mean = torch.var_mean(s.double(), dim=-1, unbiased=False)
    return s, y.detach(), mean, torch.rsqrt(var + EPS), s64.grad, w64.grad, b64.grad


def check(got, want, dtype, what, scale=1.0):
    """Elementwise closeness to the float64 reference within dtype's tolerance times scale."""
    tol = {k: v * scale for k, v in TOL[dtype].items()}
    torch.testing.assert_close(got.double(), want.double(), **tol, msg=lambda m: f"{what}: {m}")


def check_forward_and_backward(forward, backward, x, r, w, b, dy):
    """Run ``forward(x, r, w, b) -> (y, s, mean, rstd)`` and ``backward(dy, input, mean, rstd, w) ->
    (grad_input, grad_weight, grad_bias)`` (r may be None) and compare everything with the float64
    reference: s exactly, the rest within the dtype's tolerance (weight/bias grads scaled by
    sqrt(rows), as column sums of that many terms). Returns forward's outputs."""
    dtype = x.dtype
    y, s, mean, rstd = forward(x, r, w, b)
    s_ref, y_ref, mean_ref, rstd_ref, gx_ref, gw_ref, gb_ref = reference(x, r, w, b, dy)
    if r is not None:
        assert torch.equal(s, s_ref), "s must be x + r rounded to the dtype, as torch rounds it"
    check(y, y_ref, dtype, "y")
    torch.testing.assert_close(mean.double(), mean_ref.reshape(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rstd.double(), rstd_ref.reshape(-1), rtol=1e-4, atol=1e-4)
    gx, gw, gb = backward(dy, s if r is not None else x, mean, rstd, w)
    assert gw.dtype == w.dtype and gb.dtype == w.dtype
    check(gx, gx_ref, dtype, "grad_input")
    scale = max(1.0, (x.numel() // x.shape[-1]) ** 0.5)
    check(gw, gw_ref, dtype, "grad_weight", scale)
    check(gb, gb_ref, dtype, "grad_bias", scale)
    return y, s, mean, rstd
