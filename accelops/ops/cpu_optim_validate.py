"""The one validator of the CPU optimizer ops (``cpu_adam_step_``, ``cpu_adagrad_step_``, ``cpu_lion_step_``):
their CPU kernels, their fake implementations and the optimizers (``CPUOptimizerBase``) raise the same clear
errors, each naming the tensor in the caller's terms. It reads metadata only, so fake tensors are checked
the same way; the kernels' C++ checks stay as a last line.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["DTYPES", "LOW_DTYPES", "NotOnCPUError", "check_param", "check_state", "check_step", "checked_by_caller",
           "caller_checked"]


class NotOnCPUError(ValueError, AssertionError):
    """A tensor that must be on the CPU is not. Also an ``AssertionError``: DeepSpeed's CPU optimizers assert
    the device, and callers written for them catch that type."""

_tls = threading.local()


@contextlib.contextmanager
def checked_by_caller() -> Iterator[None]:
    """Within this block (per thread) the ops' CPU kernels skip ``check_step``: the optimizers use it around
    their own op calls, whose arguments they checked param by param just before (with this validator)."""
    _tls.checked = True
    try:
        yield
    finally:
        _tls.checked = False


def caller_checked() -> bool:
    """True inside ``checked_by_caller()``."""
    return getattr(_tls, "checked", False)

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LOW_DTYPES = (torch.bfloat16, torch.float16)


def check_param(owner: str, where: str, p: Tensor, g: Tensor, copy: Optional[Tensor], cpu: bool = True,
                strided_grad: bool = True) -> None:
    """Raise a clear error for a param, grad or param copy the step cannot update in place.

    ``owner`` starts each message (``CPUAdam``); ``where`` names the param. ``cpu`` requires CPU tensors
    (fake implementations pass False); ``strided_grad`` accepts a non-contiguous grad (the optimizers read
    it through a contiguous copy; the ops take contiguous grads only).
    """
    if cpu and (p.device.type != "cpu" or g.device.type != "cpu"):
        raise NotOnCPUError(f"{owner}: {where} (or its grad) is on '{p.device}'/'{g.device}'; {owner} updates CPU "
                            f"tensors only (with ZeRO, set 'offload_optimizer': 'cpu'; for other devices use "
                            f"FusedAdam or torch.optim)")
    if g.is_sparse or g.layout != torch.strided or p.layout != torch.strided:
        raise RuntimeError(f"{owner}: {where} has a sparse gradient or is not dense; {owner} supports dense "
                           f"(strided) params and gradients only")
    if p.dtype not in DTYPES:
        raise TypeError(f"{owner}: {where} has dtype {p.dtype}; supported: float32, bfloat16, float16")
    allowed = {p.dtype, torch.float32} | ({copy.dtype} if copy is not None else set())
    if g.dtype not in allowed:
        raise TypeError(f"{owner}: {where} has dtype {p.dtype} but its grad has {g.dtype}; the grad must have "
                        f"the param's dtype or float32 (or the param copy's dtype in master-weight steps)")
    if g.shape != p.shape:
        raise ValueError(f"{owner}: {where} has shape {tuple(p.shape)} but its grad has {tuple(g.shape)}")
    if not p.is_contiguous():
        raise ValueError(f"{owner}: {where} is not contiguous; the step updates params in place and never a "
                         f"temporary copy (pass contiguous params)")
    if not strided_grad and not g.is_contiguous():
        raise ValueError(f"{owner}: the grad of {where} is not contiguous; the op reads contiguous grads")
    if copy is not None:
        if (copy.dtype not in LOW_DTYPES or p.dtype != torch.float32 or copy.shape != p.shape
                or (cpu and copy.device.type != "cpu") or not copy.is_contiguous()):
            raise ValueError(f"{owner}: the copy of {where} must be a contiguous CPU bfloat16/float16 tensor of "
                             f"shape {tuple(p.shape)} and the param float32 (the master weights); got "
                             f"{copy.dtype} {tuple(copy.shape)} on {copy.device} for a {p.dtype} param")


def check_state(owner: str, where: str, key: str, p: Tensor, t, cpu: bool = True,
                dtype: torch.dtype = torch.float32) -> None:
    """Refuse a state tensor the kernel cannot update in place (e.g. loaded from another model's state_dict).
    ``dtype``: what the state must hold (float32, or the param dtype for ``fp32_optimizer_states=False``)."""
    if (not isinstance(t, Tensor) or t.shape != p.shape or t.dtype != dtype
            or (cpu and t.device.type != "cpu") or t.layout != torch.strided or not t.is_contiguous()):
        got = f"{t.dtype} {tuple(t.shape)} on {t.device}" if isinstance(t, Tensor) else type(t).__name__
        kind = str(dtype).replace("torch.", "")
        raise ValueError(f"{owner}: state {key!r} of {where} must be a contiguous {kind} CPU tensor of shape "
                         f"{tuple(p.shape)}; got {got} (a state_dict from another model?)")


def check_step(op: str, params: Sequence[Tensor], grads: Sequence[Tensor],
               states: Sequence[Tuple[str, Sequence[Tensor]]], copies: Sequence[Tensor],
               steps: Optional[Sequence[float]] = None, cpu: bool = True) -> None:
    """Every argument of one op call: list lengths (``states`` is ``[(name, tensors), ...]``; ``copies`` empty or
    one per param; ``steps`` one count >= 1 per param when given), then each param, grad, copy and state."""
    n = len(params)
    lengths = [("grads", grads)] + list(states) + ([("steps", steps)] if steps is not None else [])
    wrong = [f"{name} has {len(ts)}" for name, ts in lengths if len(ts) != n]
    if len(copies) not in (0, n):
        wrong.append(f"param_copies has {len(copies)} (must be 0 or {n})")
    if wrong:
        raise ValueError(f"{op}: got {n} params but {', '.join(wrong)}; every list needs one entry per param")
    if steps is not None and any(not s >= 1 for s in steps):
        raise ValueError(f"{op}: step counts must be >= 1 (the count after this step), got {list(steps)}")
    for i in range(n):
        where = f"params[{i}] (shape {tuple(params[i].shape)})"
        check_param(op, where, params[i], grads[i], copies[i] if copies else None, cpu=cpu, strided_grad=False)
        for name, ts in states:
            check_state(op, where, name, params[i], ts[i], cpu=cpu)
