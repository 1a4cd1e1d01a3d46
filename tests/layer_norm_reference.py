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
