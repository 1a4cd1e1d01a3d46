"""fp16 loss scaling with DeepSpeed's semantics, and an overflow decision every rank takes alike.

DeepSpeed facts (deepspeed/runtime/fp16/loss_scaler.py ``DynamicLossScaler.update_scale``, as used by its
ZeRO optimizers through ``CreateLossScaler``): the scale starts at ``init_scale`` (``2**initial_scale_power``);
on an overflow, if ``delayed_shift`` (``hysteresis``) is 1 or the hysteresis counter is down to 1, the scale
halves but never below ``min_scale`` (and when it already *is* ``min_scale``, with
``raise_error_at_min_scale``, the run stops with an error); otherwise only the counter drops by one. A step
without overflow refills the counter when ``consecutive_hysteresis``, and doubles the scale when
``(cur_iter - last_overflow_iter - 1)`` is a positive multiple of ``scale_window`` (refilling the counter
then, too) -- i.e. on the (window + 1)-th overflow-free step in a row. Every call advances ``cur_iter``.
A static scaler (``loss_scale`` > 0, or no fp16 at all: scale 1) never changes. Overflowing steps are
skipped in both cases; skipping is the caller's job (``update`` says when).

Order for the caller: scale the loss by ``loss_scale``, backward, then read ``loss_scale`` for unscaling
*before* ``update`` (DeepSpeed's ZeRO unscales after the update, so on a growth step it divides by the
doubled scale; accelops' engine should not copy that).

Importing this module imports no torch; ``has_overflow`` and ``torch_all_reduce_max`` import it on use.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from ._checks import boolean, integer, is_number, number
from .errors import ConfigError

AllReduceMax = Callable[[float], float]


class LossScaleAtMinimumError(RuntimeError):
    """An overflow happened while the dynamic scale was already at ``min_scale`` (DeepSpeed stops too)."""


def agree_on_overflow(local_overflow: Any, all_reduce_max: Optional[AllReduceMax] = None) -> bool:
    """The overflow decision for this step, identical on every rank.

    ``local_overflow``: this rank's finding (a bool, 0/1, or a one-element tensor). ``all_reduce_max``:
    a callable that every rank calls with a float and that returns the maximum over all ranks (see
    :func:`torch_all_reduce_max`); None for a single process. True when any rank overflowed.
    """
    flag = bool(local_overflow)
    if all_reduce_max is None:
        return flag
    result = all_reduce_max(1.0 if flag else 0.0)
    if hasattr(result, "item"):
        result = result.item()
    if not is_number(result):
        raise TypeError(f"all_reduce_max must return the maximum as a number, returned {result!r}")
    return result > 0


def torch_all_reduce_max(group: Any = None, device: Any = None) -> AllReduceMax:
    """An ``all_reduce_max`` over a ``torch.distributed`` process group (default: the world), exchanging
    a one-element float tensor on ``device`` (default CPU; use the accelerator's device with NCCL)."""

    def all_reduce_max(value: float) -> float:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
        return float(tensor.item())

    return all_reduce_max


def has_overflow(params_or_grads: Iterable[Any]) -> bool:
    """True when any gradient holds an inf or a NaN (this rank only; see :func:`agree_on_overflow`).

    Items: ``torch.nn.Parameter`` (its ``.grad`` is checked; None is skipped), any other tensor (checked
    itself; a DTensor by its local shard, a sparse tensor by its values), or None (skipped). One host
    synchronisation per device.
    """
    import torch

    per_device: dict = {}
    for item in params_or_grads:
        tensor = item.grad if isinstance(item, torch.nn.Parameter) else item
        if tensor is None:
            continue
        if not torch.is_tensor(tensor):
            raise TypeError(f"has_overflow takes parameters or gradient tensors, got a {type(item).__name__}")
        if hasattr(tensor, "to_local") and type(tensor).__name__ == "DTensor":
            tensor = tensor.to_local()
        if tensor.is_sparse:
            tensor = tensor.coalesce().values()
        if tensor.numel():
            per_device.setdefault(tensor.device, []).append(torch.isfinite(tensor).all())
    return any(not bool(torch.stack(flags).all()) for flags in per_device.values())


class LossScaler:
    """A static loss scale (DeepSpeed's ``LossScaler``): ``scale`` forever; 1 means no scaling."""
    dynamic = False

    def __init__(self, scale: float = 1.0):
        self.cur_scale = float(number(0, above=True)("scale", scale))

    @property
    def loss_scale(self) -> float:
        return self.cur_scale

    def scale_loss(self, loss: Any) -> Any:
        """``loss * loss_scale``, to call ``backward`` on."""
        return loss * self.cur_scale

    def update_scale(self, overflow: bool) -> None:
        """Record one step's global overflow decision (a static scale does not change)."""

    def update(self, local_overflow: Any, all_reduce_max: Optional[AllReduceMax] = None) -> bool:
        """Decide the overflow across ranks, update the scale; True when this step must be skipped."""
        overflow = agree_on_overflow(local_overflow, all_reduce_max)
        self.update_scale(overflow)
        return overflow

    def state_dict(self) -> dict:
        return {"cur_scale": self.cur_scale}

    def load_state_dict(self, state: dict) -> None:
        self.cur_scale = float(number(0, above=True)("cur_scale", _field(state, "cur_scale")))


class DynamicLossScaler(LossScaler):
    """DeepSpeed's dynamic loss scaler, with its constructor names (see the module docstring)."""
    dynamic = True
    scale_factor = 2.0

    def __init__(self, init_scale: float, scale_window: int, min_scale: float, delayed_shift: int,
                 consecutive_hysteresis: bool, raise_error_at_min_scale: bool = True):
        super().__init__(init_scale)
        self.scale_window = integer(1)("scale_window", scale_window)
        self.min_scale = number(0, above=True)("min_scale", min_scale)
        if self.cur_scale < self.min_scale:
            raise ConfigError("init_scale", f"{self.cur_scale} is below min_scale {self.min_scale}")
        self.delayed_shift = integer(1)("delayed_shift", delayed_shift)
        self.consecutive_hysteresis = boolean("consecutive_hysteresis", consecutive_hysteresis)
        self.raise_error_at_min_scale = boolean("raise_error_at_min_scale", raise_error_at_min_scale)
        self.cur_hysteresis = self.delayed_shift
        self.cur_iter = 0
        self.last_overflow_iter = -1

    def update_scale(self, overflow: bool) -> None:
        """Apply one step's global overflow decision (DeepSpeed's rules, module docstring)."""
        if overflow:
            if self.delayed_shift == 1 or self.cur_hysteresis == 1:
                if self.cur_scale == self.min_scale and self.raise_error_at_min_scale:
                    raise LossScaleAtMinimumError(
                        f"gradient overflow with the loss scale already at its minimum {self.min_scale}: the "
                        f"scale cannot decrease further (DeepSpeed stops here too); check the model for inf/nan "
                        f"or lower fp16.min_loss_scale")
                self.cur_scale = max(self.cur_scale / self.scale_factor, self.min_scale)
            else:
                self.cur_hysteresis -= 1
            self.last_overflow_iter = self.cur_iter
        else:
            if self.consecutive_hysteresis:
                self.cur_hysteresis = self.delayed_shift
            stable_interval = self.cur_iter - self.last_overflow_iter - 1
            if stable_interval > 0 and stable_interval % self.scale_window == 0:
                if not self.consecutive_hysteresis:
                    self.cur_hysteresis = self.delayed_shift
                self.cur_scale *= self.scale_factor
        self.cur_iter += 1

    def state_dict(self) -> dict:
        return {"cur_scale": self.cur_scale, "cur_iter": self.cur_iter, "last_overflow_iter": self.last_overflow_iter,
                "cur_hysteresis": self.cur_hysteresis}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.cur_iter = integer(0)("cur_iter", _field(state, "cur_iter"))
        self.last_overflow_iter = integer(-1)("last_overflow_iter", _field(state, "last_overflow_iter"))
        self.cur_hysteresis = integer(1, self.delayed_shift)("cur_hysteresis", _field(state, "cur_hysteresis"))


def _field(state: Any, key: str) -> Any:
    if not isinstance(state, dict) or key not in state:
        raise ConfigError("state_dict", f"must be a dict holding {key!r} (from the same kind of loss scaler)")
    return state[key]


def create_loss_scaler(fp16: Any, raise_error_at_min_scale: bool = True) -> LossScaler:
    """The scaler an :class:`~accelops.runtime.precision_config.FP16Config` asks for (DeepSpeed's
    ``CreateLossScaler``): dynamic when enabled with ``loss_scale`` 0, static ``loss_scale`` when enabled
    with a value, static 1 (no scaling) when fp16 is off (bf16, fp32)."""
    if not fp16.enabled:
        return LossScaler(1.0)
    if not fp16.dynamic_loss_scale:
        return LossScaler(fp16.loss_scale)
    return DynamicLossScaler(**fp16.dynamic_loss_args(), raise_error_at_min_scale=raise_error_at_min_scale)
