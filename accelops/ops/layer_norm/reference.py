"""The torch reference of the add + layer norm op: the tests' and ``ds_report --verify``'s comparison and
the pure-torch path of every device without a loaded kernel."""
import torch

__all__ = ["bwd_torch", "fwd_torch"]


def fwd_torch(x, residual, weight, bias, eps):
    """Reference forward in torch: statistics in float32, s rounded to x's dtype first (as x + r is)."""
    s = x + residual if residual is not None else x.new_empty(0)
    src = (s if residual is not None else x).float()
    var, mean = torch.var_mean(src, dim=-1, unbiased=False)
    rstd = torch.rsqrt(var + eps)
    y = ((src - mean.unsqueeze(-1)) * rstd.unsqueeze(-1) * weight.float() + bias.float()).to(x.dtype)
    return y, s, mean.reshape(-1), rstd.reshape(-1)


def bwd_torch(grad_y, inp, mean, rstd, weight):
    """Reference backward in torch (float32 math)."""
    n = inp.shape[-1]
    dy = grad_y.float().reshape(-1, n)
    xhat = (inp.float().reshape(-1, n) - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)
    g = dy * weight.float()
    grad_in = rstd.unsqueeze(-1) * (g - (g.sum(-1, keepdim=True) + xhat * (g * xhat).sum(-1, keepdim=True)) / n)
    return (grad_in.to(inp.dtype).reshape(inp.shape), (dy * xhat).sum(0).to(weight.dtype),
            dy.sum(0).to(weight.dtype))
