"""DeepSpeed's flops profiler (``deepspeed.profiling.flops_profiler.profiler``) on
:class:`torch.utils.flop_counter.FlopCounterMode`.

Contract (DeepSpeed 0.19's names, arguments and defaults):

* ``FlopsProfiler(model, ds_engine=None, recompute_fwd_factor=0.0)``; ``start_profile(ignore_list=None)``
  counts every forward of ``model`` until ``stop_profile()``; ``print_model_profile(...)`` prints what was
  counted (nothing unless started); ``end_profile()`` stops and forgets; ``reset_profile()`` zeroes the
  counts. ``get_total_flops/macs/duration/params(as_string=False)`` read the model's totals.
* ``get_model_profile(model, input_shape=None, args=[], kwargs={}, ...)`` runs ``warm_up`` forwards
  (or ``model.generate`` with ``mode='generate'``), one counted forward, and returns
  ``(flops, macs, params)``, as strings by default.

What is counted, and how it differs from DeepSpeed: FLOPs are FlopCounterMode's, which counts matrix
products (mm, addmm, bmm, baddbmm, _scaled_mm), convolutions and attention kernels at the aten level, so
``F.linear``, ``@``, ``einsum`` and ``scaled_dot_product_attention`` are all seen, however they are
called (the CPU kernel of ``scaled_dot_product_attention``, which FlopCounterMode does not list, is given
torch's own SDPA formula). DeepSpeed's own formulas also count element-wise ops, normalisations, softmax,
pooling and bias additions (e.g. ``relu`` as one FLOP per element); those count 0 here, so these FLOPs are
DeepSpeed's minus that part. MACs are FLOPs / 2: every op FlopCounterMode counts is a multiply-accumulate
op counted as two FLOPs per MAC, which is DeepSpeed's MAC count for the same ops (its ``linear`` is
``input.numel() * out_features`` MACs).

A module's FLOPs are those of the ops run while its forward runs (its submodules' included), taken as
differences of the counter's running total at forward hooks on every module of the model (keyed by the
module object, not by FlopCounterMode's class-name paths, which change when a wrapper such as DDP runs
the model); a module that is never called itself (a ``ModuleList``) gets the sum of its children, as in
DeepSpeed. Latency is the time between those hooks, after an accelerator synchronize, with the counter on
(so it carries the counter's per-op overhead). Params are ``numel()`` of ``module.parameters()`` (full
sizes, also for FSDP's sharded DTensors).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from .report import (DEFAULT_PRECISION, duration_to_string, flops_to_string, macs_to_string,  # noqa: F401
                     number_to_string, params_to_string, render)

__all__ = ["FlopsProfiler", "get_model_profile", "number_to_string", "macs_to_string", "flops_to_string",
           "params_to_string", "duration_to_string"]


@dataclass
class _Stats:
    """One module's measurements: ``flops`` and ``duration`` summed over its calls (submodules included)."""
    params: int = 0
    flops: int = 0
    duration: float = 0.0
    calls: int = 0


class FlopsProfiler:
    """Per-module FLOPs, MACs, params and forward latency of ``model`` (see the module docstring).

    ``ds_engine``: the engine whose world and batch sizes the printed summary shows (None standalone).
    ``recompute_fwd_factor``: with an engine, the backward estimate is ``2 + recompute_fwd_factor`` times
    the forward FLOPs. ``started`` is True between ``start_profile`` and ``end_profile``.
    """

    def __init__(self, model: torch.nn.Module, ds_engine: Any = None, recompute_fwd_factor: float = 0.0):
        self.model = model
        self.ds_engine = ds_engine
        self.recompute_fwd_factor = recompute_fwd_factor
        self.started = False
        #: set by the engine before printing: (its forward's seconds, seconds from forward end to step() end)
        self.step_timing: Optional[Tuple[float, float]] = None
        self._counter: Any = None
        self._handles: List[Any] = []
        self._stats: Dict[int, _Stats] = {}
        self._open: Dict[int, List[Tuple[int, float]]] = {}
        self._sync = lambda: None

    # ------------------------------------------------------------------ DeepSpeed's calls
    def start_profile(self, ignore_list: Optional[List[type]] = None) -> None:
        """Zero the counts and count every forward from now on. Modules whose type is in ``ignore_list`` get
        no profile of their own (their ops still count in their parent's, as in DeepSpeed)."""
        from torch.utils.flop_counter import FlopCounterMode

        from accelops.accelerator import get_accelerator

        self.stop_profile()
        self.reset_profile()
        _warm_up_counter()
        self._sync = get_accelerator().synchronize
        ignored = tuple(ignore_list or ())
        for module in self.model.modules():
            if type(module) not in ignored:
                self._handles.append(module.register_forward_pre_hook(self._enter))
                self._handles.append(module.register_forward_hook(self._leave, always_call=True))
        self._counter = FlopCounterMode(display=False, custom_mapping=_torch_formulas_for_unlisted_ops())
        self._counter.__enter__()
        self.started = True

    def stop_profile(self) -> None:
        """Stop counting; the counts stay readable until ``end_profile``/``reset_profile``."""
        if self._counter is not None:
            counter, self._counter = self._counter, None
            counter.__exit__(None, None, None)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def reset_profile(self) -> None:
        """Zero every module's FLOPs and latency and recount its params."""
        self._stats = {id(m): _Stats(params=sum(p.numel() for p in m.parameters())) for m in self.model.modules()}
        self._open.clear()

    def end_profile(self) -> None:
        """Stop counting and drop the counts (the totals read 0 after)."""
        if not self.started:
            return
        self.stop_profile()
        self._stats = {}
        self._open.clear()
        self.step_timing = None
        self.started = False

    def get_total_flops(self, as_string: bool = False) -> Any:
        """The model's forward FLOPs (counted since ``start_profile``)."""
        flops = self.module_flops(self.model)
        return number_to_string(flops) if as_string else flops

    def get_total_macs(self, as_string: bool = False) -> Any:
        """The model's forward MACs (FLOPs / 2, see the module docstring)."""
        macs = self.module_macs(self.model)
        return macs_to_string(macs) if as_string else macs

    def get_total_duration(self, as_string: bool = False) -> Any:
        """Seconds spent in the model's forward while counting."""
        seconds = self.module_duration(self.model)
        return duration_to_string(seconds) if as_string else seconds

    def get_total_params(self, as_string: bool = False) -> Any:
        """The number of the model's parameters (each counted once)."""
        params = self.module_params(self.model)
        return params_to_string(params) if as_string else params

    def print_model_profile(self, profile_step: int = 1, module_depth: int = -1, top_modules: int = 1,
                            detailed: bool = True, output_file: Optional[str] = None) -> None:
        """Print the profile (summary, top ``top_modules`` classes per depth up to ``module_depth``, and the
        module tree when ``detailed``) to stdout, or write it to ``output_file`` (overwritten; its folder
        is made). Does nothing unless started, as in DeepSpeed. Sets ``flops``, ``macs`` and ``params``."""
        if not self.started:
            return
        self.flops, self.macs, self.params = self.get_total_flops(), self.get_total_macs(), self.get_total_params()
        text = render(self, profile_step, module_depth, top_modules, detailed)
        if output_file:
            folder = os.path.dirname(os.path.abspath(output_file))
            os.makedirs(folder, exist_ok=True)
            with open(output_file, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    # ------------------------------------------------------------------ per module (accelops' own readers)
    def module_flops(self, module: torch.nn.Module) -> int:
        """``module``'s forward FLOPs: measured when it was called, else the sum of its children's."""
        stats = self._stats.get(id(module))
        if stats is not None and stats.calls:
            return stats.flops
        return sum(self.module_flops(child) for child in module.children())

    def module_macs(self, module: torch.nn.Module) -> int:
        return self.module_flops(module) // 2

    def module_duration(self, module: torch.nn.Module) -> float:
        """Seconds in ``module``'s forward: measured when it was called, else its children's sum."""
        stats = self._stats.get(id(module))
        if stats is not None and stats.calls:
            return stats.duration
        return sum(self.module_duration(child) for child in module.children())

    def module_params(self, module: torch.nn.Module) -> int:
        stats = self._stats.get(id(module))
        return stats.params if stats is not None else 0

    # ------------------------------------------------------------------ hooks
    def _enter(self, module: torch.nn.Module, inputs: Any) -> None:
        if self._counter is None:
            return
        self._sync()
        self._open.setdefault(id(module), []).append((self._counter.get_total_flops(), time.perf_counter()))

    def _leave(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        opened = self._open.get(id(module))
        if self._counter is None or not opened:
            return
        self._sync()
        flops, start = opened.pop()
        stats = self._stats.setdefault(id(module), _Stats())
        if not opened:  # a module that calls itself is counted at its outermost call only
            stats.flops += self._counter.get_total_flops() - flops
            stats.duration += time.perf_counter() - start
        stats.calls += 1


def _torch_formulas_for_unlisted_ops() -> Dict[Any, Any]:
    """Ops FlopCounterMode has a formula for but does not list under this name: the CPU kernel of
    ``scaled_dot_product_attention`` gets torch's own SDPA formula (``sdpa_flop_count``, the one its CUDA
    kernels get), so attention on CPU does not count 0."""
    from torch.utils.flop_counter import sdpa_flop_count

    def sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    cpu_kernel = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if cpu_kernel is None else {cpu_kernel: sdpa}


_WARM = []


def _warm_up_counter() -> None:
    """Run one tiny op under a FlopCounterMode, once per process: its first counted op takes about a
    second (lazy imports), which would otherwise land in the first profiled module's latency."""
    if not _WARM:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False):
            torch.nn.functional.linear(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1))
        _WARM.append(True)


def _call(model: torch.nn.Module, args: List[Any], kwargs: Dict[str, Any], mode: str) -> Any:
    if mode == "generate":
        return model.generate(*args, **kwargs)
    return model(*args, **kwargs)


def get_model_profile(model: torch.nn.Module, input_shape: Optional[tuple] = None, args: List[Any] = [],
                      kwargs: Dict[str, Any] = {}, print_profile: bool = True, detailed: bool = True,
                      module_depth: int = -1, top_modules: int = 1, warm_up: int = 1, as_string: bool = True,
                      output_file: Optional[str] = None, ignore_modules: Optional[List[type]] = None,
                      mode: str = "forward") -> Tuple[Any, Any, Any]:
    """Profile one forward of ``model`` (put in eval mode, as DeepSpeed does) and return ``(flops, macs,
    params)``: numbers, or with ``as_string`` DeepSpeed's strings (``"1.15 K"``, ``"576 MACs"``, ``"212"``).

    The input is ``args``/``kwargs``, or with ``input_shape`` (a tuple) one tensor of that shape filled with
    zeros, in the dtype and on the device of the model's first parameter. ``warm_up`` uncounted calls come
    first; ``mode`` is ``'forward'`` (``model(...)``) or ``'generate'`` (``model.generate(...)``). Prints
    the profile (``print_profile``) at step ``warm_up``, to ``output_file`` when given.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"get_model_profile(model=...) must be a torch.nn.Module, got a {type(model).__name__}")
    if mode not in ("forward", "generate"):
        raise ValueError(f"get_model_profile(mode=...) must be 'forward' or 'generate', got {mode!r}")
    if input_shape is not None:
        if not isinstance(input_shape, tuple) or not input_shape:
            raise TypeError(f"input_shape must be a non-empty tuple, got {input_shape!r}")
        first = next(model.parameters(), None)
        like = {} if first is None else {"dtype": first.dtype, "device": first.device}
        args = [torch.zeros(input_shape, **like)]
    if not args and not kwargs:
        raise ValueError("get_model_profile needs input_shape, args or kwargs to call the model with")
    args, kwargs = list(args), dict(kwargs)
    model.eval()
    for _ in range(warm_up):
        _call(model, args, kwargs, mode)
    profiler = FlopsProfiler(model)
    profiler.start_profile(ignore_list=ignore_modules)
    try:
        _call(model, args, kwargs, mode)
        profiler.stop_profile()
        flops, macs, params = profiler.get_total_flops(), profiler.get_total_macs(), profiler.get_total_params()
        if print_profile:
            profiler.print_model_profile(profile_step=warm_up, module_depth=module_depth, top_modules=top_modules,
                                         detailed=detailed, output_file=output_file)
    finally:
        profiler.end_profile()
    if as_string:
        return number_to_string(flops), macs_to_string(macs), params_to_string(params)
    return flops, macs, params
