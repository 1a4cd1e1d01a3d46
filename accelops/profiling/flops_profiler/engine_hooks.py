"""The engine's use of the flops profiler: when to start, stop, print and end it, and DeepSpeed's
``flops_profiler_*`` accessors. The engine holds one :class:`EngineFlopsProfiling` and calls it twice.

DeepSpeed 0.19 facts followed (deepspeed/runtime/engine.py): the profiler exists only when
``flops_profiler.enabled`` (``engine.flops_profiler``; None here otherwise). A forward run while
``global_rank == 0 and global_steps == profile_step`` starts the profile (resetting it) before the model
runs and stops it after; at the end of every ``step()`` call of that global step (a boundary or not), the
profile is printed with ``profile_step=global_steps`` as it is then (so ``profile_step + 1`` after a
boundary step, as DeepSpeed prints) and ended. With gradient accumulation DeepSpeed therefore prints one
profile per micro-batch of that step, and so does accelops. Other ranks and other steps do nothing.

Added here: the step's latency. The engine's forward, and the time from the forward's end to the end of
``step()`` (backward and, on a boundary, the optimizer step), each after an accelerator synchronize, are
handed to the profiler's summary (DeepSpeed prints bwd/step latency only with ``wall_clock_breakdown``,
from its timers, which accelops lacks).
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, ContextManager, Optional

_NOTHING = contextlib.nullcontext()


class EngineFlopsProfiling:
    """The profiler's schedule for one engine (see the module docstring). ``profiler`` is the
    :class:`~accelops.profiling.flops_profiler.FlopsProfiler` of ``engine.module``, or None when the config
    does not enable it (then :meth:`forward` and :meth:`after_step` cost one attribute test)."""

    def __init__(self, engine: Any):
        self.config = engine._config.flops_profiler
        self.profiler: Any = None
        self._forward_end: Optional[float] = None
        self._forward_seconds = 0.0
        if self.config.enabled:
            from .profiler import FlopsProfiler

            self.profiler = FlopsProfiler(engine.module, engine, self.config.recompute_fwd_factor)

    def _active(self, engine: Any) -> bool:
        return engine.global_rank == 0 and engine.global_steps == self.config.profile_step

    def forward(self, engine: Any) -> ContextManager[None]:
        """A context for the engine's forward: profiles it when active, otherwise does nothing."""
        if self.profiler is None or not self._active(engine):
            return _NOTHING
        return self._profiled_forward()

    @contextlib.contextmanager
    def _profiled_forward(self):
        sync = _synchronize()
        sync()
        start = time.perf_counter()
        self.profiler.start_profile(ignore_list=None)
        try:
            yield
        finally:
            self.profiler.stop_profile()
            sync()
            self._forward_end = time.perf_counter()
            self._forward_seconds = self._forward_end - start

    def after_step(self, engine: Any) -> None:
        """At the end of ``step()``: print and end a profile started in this global step."""
        if self.profiler is None or not self.profiler.started:
            return
        if self._forward_end is not None:
            _synchronize()()
            self.profiler.step_timing = (self._forward_seconds, time.perf_counter() - self._forward_end)
        config = self.config
        self.profiler.print_model_profile(profile_step=engine.global_steps, module_depth=config.module_depth,
                                          top_modules=config.top_modules, detailed=config.detailed,
                                          output_file=config.output_file)
        self.profiler.end_profile()
        self._forward_end = None


def _synchronize():
    from accelops.accelerator import get_accelerator

    return get_accelerator().synchronize


class FlopsProfilerAccessors:
    """DeepSpeed's engine accessors of the ``flops_profiler`` section (a mixin of the engine, which keeps
    the checked config as ``_config``)."""

    def flops_profiler_enabled(self) -> bool:
        return self._config.flops_profiler.enabled

    def flops_profiler_recompute_fwd_factor(self) -> float:
        return self._config.flops_profiler.recompute_fwd_factor

    def flops_profiler_profile_step(self) -> int:
        return self._config.flops_profiler.profile_step

    def flops_profiler_module_depth(self) -> int:
        return self._config.flops_profiler.module_depth

    def flops_profiler_top_modules(self) -> int:
        return self._config.flops_profiler.top_modules

    def flops_profiler_detailed(self) -> bool:
        return self._config.flops_profiler.detailed

    def flops_profiler_output_file(self) -> Optional[str]:
        return self._config.flops_profiler.output_file
