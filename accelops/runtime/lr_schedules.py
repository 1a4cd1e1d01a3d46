"""DeepSpeed's LR schedules with its constructor names, defaults and formulas, and the
``torch.optim.lr_scheduler`` surface (``step``, ``get_lr``, ``get_last_lr``, ``state_dict``,
``load_state_dict``, ``optimizer``, ``last_epoch``).

DeepSpeed facts (deepspeed/runtime/lr_schedules.py): ``last_batch_iteration`` counts finished batches, -1
before the first; at construction with -1 the schedule writes its lr for -1 into the optimizer; every
``step()`` advances by one and writes ``get_lr()``; the state dict is ``{"last_batch_iteration": n}``.
Warmup length is ``W = max(2, warmup_num_steps)``; "log" warmup is ``log(i + 1) / log(W)``, "linear" is
``i / W``, for ``i < W``. Per-group values may be a scalar or one value per param group. OneCycle cycles
``betas[0]`` (and sets ``betas[1]`` to 0.99) only for optimizers whose defaults have ``betas``.

Where DeepSpeed logs a warning and guesses (an unknown ``warmup_type``), accelops raises; every argument
is checked and a bad one raises :class:`~accelops.runtime.errors.ConfigError` (a ValueError) naming it.
``get_last_lr()`` works right after construction.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, List, Optional, Union

import torch
from torch.optim import Optimizer

from ._checks import boolean, got, integer, number, number_or_list, one_of, optional
from .errors import ConfigError
from .scheduler_config import SchedulerConfig, parse_scheduler

WARMUP_LOG_RATE, WARMUP_LINEAR_RATE = "log", "linear"
_warmup_type = one_of(WARMUP_LOG_RATE, WARMUP_LINEAR_RATE)


def get_torch_optimizer(optimizer: Any) -> Optimizer:
    """The ``torch.optim.Optimizer`` itself, or the one a wrapper holds as ``.optimizer`` (as DeepSpeed)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(getattr(optimizer, "optimizer", None), Optimizer):
        return optimizer.optimizer
    raise TypeError(f"{type(optimizer).__name__} is not a torch.optim.Optimizer (nor wraps one as .optimizer)")


def update_lr(param_groups: List[dict], lrs: List[Any]) -> List[Any]:
    """Write ``lrs`` into the groups (a tensor lr is filled in place); returns the groups' lrs."""
    for group, lr in zip(param_groups, lrs):
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr.squeeze() if torch.is_tensor(lr) else lr)
        else:
            group["lr"] = lr
    return [group["lr"] for group in param_groups]


def per_group(optimizer: Optimizer, name: str, value: Any, minimum: Optional[float] = 0) -> List[Any]:
    """A checked scalar repeated for every param group, or a checked list with one value per group."""
    value = number_or_list(minimum)(name, value)
    count = len(optimizer.param_groups)
    if isinstance(value, tuple):
        if len(value) != count:
            raise ConfigError(name, f"has {len(value)} values, but the optimizer has {count} param groups")
        return list(value)
    return [value] * count


def warmup_fraction(iteration: int, warmup_num_steps: int, warmup_type: str) -> float:
    """DeepSpeed's warmup curve at ``iteration`` < W: "log": log(i + 1) / log(W); "linear": i / W (computed
    in DeepSpeed's order, so the values are bit for bit DeepSpeed's)."""
    if warmup_type == WARMUP_LOG_RATE:
        return (1.0 / math.log(warmup_num_steps)) * math.log(iteration + 1)
    return iteration / warmup_num_steps


class _Schedule:
    """What every schedule shares: the optimizer, the batch counter, step() and the state dict.
    Subclasses set their fields, then call ``_start()``, and define ``get_lr()``."""

    def __init__(self, optimizer: Any, last_batch_iteration: int):
        self.optimizer = get_torch_optimizer(optimizer)
        self.last_batch_iteration = integer(-1)("last_batch_iteration", last_batch_iteration)

    def _start(self) -> None:
        """As DeepSpeed: a fresh schedule (-1) writes its first lr; a resumed one leaves the groups alone."""
        if self.last_batch_iteration == -1:
            self._last_lr = update_lr(self.optimizer.param_groups, self.get_lr())
        else:
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    @property
    def last_epoch(self) -> int:
        """torch's name for the counter: the same as ``last_batch_iteration``."""
        return self.last_batch_iteration

    def get_lr(self) -> List[Any]:
        """The lr of each param group at ``last_batch_iteration``."""
        raise NotImplementedError

    def get_last_lr(self) -> List[Any]:
        """The lrs last written into the optimizer."""
        return list(self._last_lr)

    def step(self, last_batch_iteration: Optional[int] = None) -> None:
        """Advance to ``last_batch_iteration`` (default: the next batch) and write its lrs."""
        if last_batch_iteration is None:
            last_batch_iteration = self.last_batch_iteration + 1
        self.last_batch_iteration = integer(-1)("last_batch_iteration", last_batch_iteration)
        self._last_lr = update_lr(self.optimizer.param_groups, self.get_lr())

    def state_dict(self) -> dict:
        """``{"last_batch_iteration": n}``, DeepSpeed's layout."""
        return {"last_batch_iteration": self.last_batch_iteration}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the counter (as DeepSpeed, the optimizer's own state restores the lrs)."""
        if not isinstance(state_dict, dict) or "last_batch_iteration" not in state_dict:
            raise ConfigError("state_dict", f"must be a dict with 'last_batch_iteration', {got(state_dict)}")
        self.last_batch_iteration = integer(-1)("last_batch_iteration", state_dict["last_batch_iteration"])
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class LRRangeTest(_Schedule):
    """LR range test: ``lr = min_lr * (1 + step_rate * interval)``, ``interval = (i + 1) / step_size``,
    floored when ``lr_range_test_staircase``."""

    def __init__(self, optimizer: Any, lr_range_test_min_lr: Union[float, List[float]] = 1e-3,
                 lr_range_test_step_size: int = 2000, lr_range_test_step_rate: float = 1.0,
                 lr_range_test_staircase: bool = False, last_batch_iteration: int = -1):
        super().__init__(optimizer, last_batch_iteration)
        self.min_lr = per_group(self.optimizer, "lr_range_test_min_lr", lr_range_test_min_lr)
        self.step_size = integer(1)("lr_range_test_step_size", lr_range_test_step_size)
        self.step_rate = number(0)("lr_range_test_step_rate", lr_range_test_step_rate)
        self.staircase = boolean("lr_range_test_staircase", lr_range_test_staircase)
        self._start()

    def get_lr(self) -> List[float]:
        interval = (self.last_batch_iteration + 1) / self.step_size
        if self.staircase:
            interval = math.floor(interval)
        return [min_lr * (1 + self.step_rate * interval) for min_lr in self.min_lr]

    def step(self, batch_iteration: Optional[int] = None) -> None:
        super().step(batch_iteration)


class OneCycle(_Schedule):
    """1Cycle: lr rises from ``cycle_min_lr`` to ``cycle_max_lr`` over ``cycle_first_step_size`` batches,
    falls back over ``cycle_second_step_size`` (default: the first), then decays as
    ``cycle_min_lr / (1 + decay_lr_rate * d / decay_step_size)`` for the d-th batch after the cycle. Momentum
    (``betas[0]``) moves the opposite way between ``cycle_max_mom`` and ``cycle_min_mom``, then as
    ``cycle_max_mom * (1 + decay_mom_rate * d / decay_step_size)``. A stair count > 0 holds values flat in
    that many stairs per half cycle."""

    def __init__(self, optimizer: Any, cycle_min_lr: Union[float, List[float]], cycle_max_lr: Union[float, List[float]],
                 decay_lr_rate: float = 0., cycle_first_step_size: float = 2000,
                 cycle_second_step_size: Optional[float] = None, cycle_first_stair_count: int = 0,
                 cycle_second_stair_count: Optional[int] = None, decay_step_size: float = 0,
                 cycle_momentum: bool = True, cycle_min_mom: Union[float, List[float]] = 0.8,
                 cycle_max_mom: Union[float, List[float]] = 0.9, decay_mom_rate: float = 0.,
                 last_batch_iteration: int = -1):
        super().__init__(optimizer, last_batch_iteration)
        first = float(number(0, above=True)("cycle_first_step_size", cycle_first_step_size))
        second = optional(number(0))("cycle_second_step_size", cycle_second_step_size)
        self.first_step_size = first
        self.second_step_size = first if second is None else float(second)
        self.total_size = self.first_step_size + self.second_step_size
        self.step_ratio = self.first_step_size / self.total_size
        self.first_stair_count = integer(0)("cycle_first_stair_count", cycle_first_stair_count)
        second_stairs = optional(integer(0))("cycle_second_stair_count", cycle_second_stair_count)
        self.second_stair_count = self.first_stair_count if second_stairs is None else second_stairs
        self.decay_step_size = number(0)("decay_step_size", decay_step_size)
        self.min_lrs = per_group(self.optimizer, "cycle_min_lr", cycle_min_lr)
        self.max_lrs = per_group(self.optimizer, "cycle_max_lr", cycle_max_lr)
        self.decay_lr_rate = number(0)("decay_lr_rate", decay_lr_rate)
        no_decay = math.isclose(self.decay_step_size, 0)
        self.skip_lr_decay = no_decay or math.isclose(self.decay_lr_rate, 0)
        self.cycle_momentum = boolean("cycle_momentum", cycle_momentum)
        if self.cycle_momentum and "betas" not in self.optimizer.defaults:
            warnings.warn(f"OneCycle: cycle_momentum is off because {type(self.optimizer).__name__} has no betas "
                          f"(as DeepSpeed, only betas[0] is cycled)", stacklevel=2)
            self.cycle_momentum = False
        if self.cycle_momentum:
            self.min_moms = [(m, 0.99) for m in per_group(self.optimizer, "cycle_min_mom", cycle_min_mom)]
            self.max_moms = [(m, 0.99) for m in per_group(self.optimizer, "cycle_max_mom", cycle_max_mom)]
            self.decay_mom_rate = number()("decay_mom_rate", decay_mom_rate)
            self.skip_mom_decay = no_decay or math.isclose(self.decay_mom_rate, 0)
        self._start()

    def _start(self) -> None:
        super()._start()
        if self.cycle_momentum and self.last_batch_iteration == -1:
            for group, betas in zip(self.optimizer.param_groups, self.min_moms):
                group["betas"] = betas

    def _scale_factor(self) -> float:
        batch = self.last_batch_iteration + 1
        cycle = math.floor(1 + batch / self.total_size)
        x = 1. + batch / self.total_size - cycle
        if x <= self.step_ratio:
            scale, stairs = x / self.step_ratio, self.first_stair_count
        else:
            scale, stairs = (x - 1) / (self.step_ratio - 1), self.second_stair_count
        if stairs > 0:  # quantised from the integer batch offset, as DeepSpeed
            in_cycle = batch % self.total_size
            if in_cycle <= self.first_step_size:
                position = in_cycle * stairs / self.first_step_size
            else:
                position = (self.total_size - in_cycle) * stairs / self.second_step_size
            scale = math.floor(position) / stairs
        return scale

    def _decay_interval(self) -> float:
        return (self.last_batch_iteration - self.total_size + 1) / self.decay_step_size

    def get_lr(self) -> List[float]:
        if self.last_batch_iteration < self.total_size:
            scale = self._scale_factor()
            return [low + (high - low) * scale for low, high in zip(self.min_lrs, self.max_lrs)]
        if self.skip_lr_decay:
            return list(self.min_lrs)
        return [low / (1 + self.decay_lr_rate * self._decay_interval()) for low in self.min_lrs]

    def get_mom(self) -> Optional[List[tuple]]:
        """The ``betas`` of each group at ``last_batch_iteration``; None without momentum cycling."""
        if not self.cycle_momentum:
            return None
        if self.last_batch_iteration < self.total_size:
            scale = self._scale_factor()
            return [(high[0] - (high[0] - low[0]) * scale, low[1]) for low, high in zip(self.min_moms, self.max_moms)]
        if self.skip_mom_decay:
            return list(self.max_moms)
        factor = 1 + self.decay_mom_rate * self._decay_interval()
        return [(beta0 * factor, beta1) for beta0, beta1 in self.max_moms]

    def step(self, batch_iteration: Optional[int] = None) -> None:
        super().step(batch_iteration)
        if self.cycle_momentum:
            for group, betas in zip(self.optimizer.param_groups, self.get_mom()):
                group["betas"] = betas


class WarmupLR(_Schedule):
    """Warm up from ``warmup_min_lr`` to ``warmup_max_lr`` (default: each group's lr at construction) over
    ``warmup_num_steps`` batches, then hold: ``lr = min + (max - min) * gamma``."""

    def __init__(self, optimizer: Any, warmup_min_lr: Union[float, List[float]] = 0.0,
                 warmup_max_lr: Union[float, List[float], None] = None, warmup_num_steps: int = 1000,
                 warmup_type: str = WARMUP_LOG_RATE, last_batch_iteration: int = -1):
        super().__init__(optimizer, last_batch_iteration)
        self._warmup(warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type)
        self._start()

    def _warmup(self, warmup_min_lr: Any, warmup_max_lr: Any, warmup_num_steps: int, warmup_type: str) -> None:
        if warmup_max_lr is None:
            warmup_max_lr = [group["lr"] for group in self.optimizer.param_groups]
            warmup_max_lr = [float(lr) if torch.is_tensor(lr) else lr for lr in warmup_max_lr]
        self.min_lrs = per_group(self.optimizer, "warmup_min_lr", warmup_min_lr)
        self.max_lrs = per_group(self.optimizer, "warmup_max_lr", warmup_max_lr)
        self.delta_lrs = [high - low for high, low in zip(self.max_lrs, self.min_lrs)]
        self.warmup_num_steps = max(2, integer(1)("warmup_num_steps", warmup_num_steps))
        self.warmup_type = _warmup_type("warmup_type", warmup_type)

    def get_lr(self) -> List[float]:
        if self.last_batch_iteration < 0:
            return list(self.min_lrs)
        gamma = self._get_gamma()
        return [low + delta * gamma for low, delta in zip(self.min_lrs, self.delta_lrs)]

    def _get_gamma(self) -> float:
        if self.last_batch_iteration < self.warmup_num_steps:
            return warmup_fraction(self.last_batch_iteration, self.warmup_num_steps, self.warmup_type)
        return 1.0


class WarmupDecayLR(WarmupLR):
    """WarmupLR, then linear decay to 0 at ``total_num_steps``:
    ``gamma = max(0, (total - i) / max(1, total - W))``."""

    def __init__(self, optimizer: Any, total_num_steps: int, warmup_min_lr: Union[float, List[float]] = 0.0,
                 warmup_max_lr: Union[float, List[float]] = 0.001, warmup_num_steps: int = 1000,
                 warmup_type: str = WARMUP_LOG_RATE, last_batch_iteration: int = -1):
        self.total_num_steps = integer(1)("total_num_steps", total_num_steps)
        super().__init__(optimizer, warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type, last_batch_iteration)
        _warn_short(self.total_num_steps, warmup_num_steps)

    def _get_gamma(self) -> float:
        if self.last_batch_iteration < self.warmup_num_steps:
            return warmup_fraction(self.last_batch_iteration, self.warmup_num_steps, self.warmup_type)
        remaining = float(self.total_num_steps - self.last_batch_iteration)
        return max(0.0, remaining / float(max(1.0, self.total_num_steps - self.warmup_num_steps)))


class WarmupCosineLR(_Schedule):
    """Ratio schedule on each group's lr at construction: warm up from ``warmup_min_ratio`` to 1 over W
    batches, then cosine down to ``cos_min_ratio`` at ``total_num_steps`` and stay there."""

    def __init__(self, optimizer: Any, total_num_steps: int, warmup_min_ratio: float = 0.0,
                 warmup_num_steps: int = 1000, cos_min_ratio: float = 0.0001, warmup_type: str = WARMUP_LOG_RATE,
                 last_batch_iteration: int = -1):
        super().__init__(optimizer, last_batch_iteration)
        self.total_num_steps = integer(1)("total_num_steps", total_num_steps)
        self.warmup_min_ratio = number(0)("warmup_min_ratio", warmup_min_ratio)
        self.warmup_num_steps = max(2, integer(1)("warmup_num_steps", warmup_num_steps))
        self.cos_min_ratio = number(0)("cos_min_ratio", cos_min_ratio)
        self.warmup_type = _warmup_type("warmup_type", warmup_type)
        _warn_short(self.total_num_steps, warmup_num_steps)
        self.org_lrs = [lr.clone() if torch.is_tensor(lr) else lr
                        for lr in (group["lr"] for group in self.optimizer.param_groups)]
        self._start()

    def get_lr_ratio(self) -> float:
        """The factor applied to each group's original lr at ``last_batch_iteration``."""
        if self.last_batch_iteration < 0:
            return 0.0
        if self.last_batch_iteration < self.warmup_num_steps:
            ratio = warmup_fraction(self.last_batch_iteration, self.warmup_num_steps, self.warmup_type)
            return self.warmup_min_ratio + ratio * (1. - self.warmup_min_ratio)
        done = self.last_batch_iteration - self.warmup_num_steps + 1
        progress = min(1.0, done / max(1, self.total_num_steps - self.warmup_num_steps))
        cosine = (1 + math.cos(math.pi * progress)) / 2
        return max(0.0, self.cos_min_ratio + (1. - self.cos_min_ratio) * cosine)

    def get_lr(self) -> List[Any]:
        ratio = self.get_lr_ratio()
        return [lr * ratio for lr in self.org_lrs]


def _warn_short(total_num_steps: int, warmup_num_steps: int) -> None:
    if total_num_steps < warmup_num_steps:
        warnings.warn(f"total_num_steps {total_num_steps} is less than warmup_num_steps {warmup_num_steps}",
                      stacklevel=3)


SCHEDULE_CLASSES = {cls.__name__: cls for cls in (WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest)}


def build_scheduler(optimizer: Any, scheduler_config: Union[SchedulerConfig, dict, None]) -> Optional[_Schedule]:
    """The schedule a config names, on ``optimizer``; None when ``scheduler_config`` is None.

    ``scheduler_config``: ``EngineConfig.scheduler``, or a raw ``{"type": ..., "params": {...}}`` section
    (checked as :func:`~accelops.runtime.load_config` would)."""
    if scheduler_config is None:
        return None
    if isinstance(scheduler_config, dict):
        scheduler_config = parse_scheduler(scheduler_config, [])
    if not isinstance(scheduler_config, SchedulerConfig):
        raise TypeError(f"scheduler_config must be a SchedulerConfig, a dict or None, got "
                        f"{type(scheduler_config).__name__}")
    return SCHEDULE_CLASSES[scheduler_config.type](optimizer, **scheduler_config.params)
