"""The one validator of the add + layer norm op: its fake implementation, its kernels on every device
and ``fused_add_layer_norm`` raise the same clear errors for inputs outside the schema (see ``ops``)."""
import math
from typing import Optional

import torch
from torch import Tensor

__all__ = ["DTYPES", "MAX_ROW", "check_arguments", "check_bwd", "check_cuda_bwd", "check_cuda_fwd", "check_fwd"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Longest row the CUDA kernels take: their launch planning and loops use 32-bit indices with headroom.
MAX_ROW = 2**30



def check_arguments(x, residual, weight, bias, eps) -> None:
    """Types and eps of ``fused_add_layer_norm``'s arguments (shapes and dtypes: ``check_fwd``)."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if not isinstance(t, Tensor):
            raise TypeError(f"fused_add_layer_norm: {name} must be a tensor, got {type(t).__name__} (weight and "
                            f"bias are required; pass ones and zeros for a layer norm without affine parameters)")
    if residual is not None and not isinstance(residual, Tensor):
        raise TypeError(f"fused_add_layer_norm: residual must be a tensor or None, got {type(residual).__name__}")
    for name, t in (("x", x), ("residual", residual), ("weight", weight), ("bias", bias)):
        if t is not None and t.layout != torch.strided:
            raise ValueError(f"fused_add_layer_norm: {name} must be a dense (strided) tensor, got {t.layout}")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"fused_add_layer_norm: eps must be a finite number >= 0, got {eps!r}")


def check_fwd(x: Tensor, residual: Optional[Tensor], weight: Tensor, bias: Tensor) -> None:
    """Raise a clear error for inputs outside the schema (any device)."""
    if x.dtype not in DTYPES:
        raise TypeError(f"add_layer_norm: x must be float32, bfloat16 or float16, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"add_layer_norm: x must have shape [..., N] with N > 0, got {tuple(x.shape)}")
    n = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != (n,):
            raise ValueError(f"add_layer_norm: {name} must have shape [{n}] (x's last dim), got {tuple(t.shape)}")
    tensors = [("x", x), ("weight", weight), ("bias", bias)]
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"add_layer_norm: residual must have x's shape {tuple(x.shape)}, "
                             f"got {tuple(residual.shape)}")
        tensors.append(("residual", residual))
    for name, t in tensors:
        if t.dtype != x.dtype:
            raise TypeError(f"add_layer_norm: {name} has dtype {t.dtype}, expected x's dtype {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"add_layer_norm: {name} is on {t.device}, expected x's device {x.device}")
        if t.layout != torch.strided:
            raise ValueError(f"add_layer_norm: {name} must be a dense (strided) tensor, got {t.layout}")


def check_bwd(grad_y: Tensor, inp: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor) -> None:
    n = inp.shape[-1]
    rows = inp.numel() // n if n else 0
    if grad_y.shape != inp.shape or grad_y.dtype != inp.dtype:
        raise ValueError(f"add_layer_norm backward: grad_y must match input ({tuple(inp.shape)}, {inp.dtype}), "
                         f"got ({tuple(grad_y.shape)}, {grad_y.dtype})")
    for name, t in (("mean", mean), ("rstd", rstd)):
        if t.shape != (rows,) or t.dtype != torch.float32:
            raise ValueError(f"add_layer_norm backward: {name} must be float32 of shape [{rows}], "
                             f"got {t.dtype} {tuple(t.shape)}")
    if weight.shape != (n,) or weight.dtype != inp.dtype:
        raise ValueError(f"add_layer_norm backward: weight must be {inp.dtype} of shape [{n}], "
                         f"got {weight.dtype} {tuple(weight.shape)}")


def check_cuda_fwd(x, residual, weight, bias) -> None:
    """Every input the CUDA forward does not take raises a clear Python error here, so that bad input
    never reaches the extension (its own checks are a constant-message last line)."""
    check_fwd(x, residual, weight, bias)  # dtypes, shapes, devices, layouts (any device)
    if x.shape[-1] > MAX_ROW:
        raise ValueError(f"add_layer_norm (cuda): the row size (x's last dim) must be at most 2**30, "
                         f"got {x.shape[-1]}")
    if x.device.type != "cuda":
        raise ValueError(f"add_layer_norm (cuda): x must be a CUDA tensor, got one on {x.device}")


def check_cuda_bwd(grad_y, inp, mean, rstd, weight) -> None:
    """The backward's counterpart of check_cuda_fwd (the op's own check does not cover devices)."""
    if inp.dtype not in DTYPES:
        raise TypeError(f"add_layer_norm backward (cuda): input must be float32, bfloat16 or float16, got {inp.dtype}")
    if inp.dim() < 1 or inp.shape[-1] == 0 or inp.shape[-1] > MAX_ROW:
        raise ValueError(f"add_layer_norm backward (cuda): input must have shape [..., N] with 0 < N <= 2**30, "
                         f"got {tuple(inp.shape)}")
    check_bwd(grad_y, inp, mean, rstd, weight)
    for name, t in (("grad_y", grad_y), ("input", inp), ("mean", mean), ("rstd", rstd), ("weight", weight)):
        if t.device != inp.device or t.device.type != "cuda":
            raise ValueError(f"add_layer_norm backward (cuda): {name} is on {t.device}; all tensors must be on one "
                             f"CUDA device (input is on {inp.device})")
        if t.layout != torch.strided:
            raise ValueError(f"add_layer_norm backward (cuda): {name} must be a dense (strided) tensor, got {t.layout}")
