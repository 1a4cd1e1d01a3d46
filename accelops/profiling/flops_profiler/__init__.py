"""DeepSpeed's ``deepspeed.profiling.flops_profiler``: :class:`FlopsProfiler`, :func:`get_model_profile` and
the number formatters, from :mod:`.profiler` (see its docstring for what is counted and how it differs from
DeepSpeed). The engine's schedule for it is :mod:`.engine_hooks`."""
from .profiler import (FlopsProfiler, duration_to_string, flops_to_string, get_model_profile, macs_to_string,
                       number_to_string, params_to_string)

__all__ = ["FlopsProfiler", "get_model_profile", "number_to_string", "macs_to_string", "flops_to_string",
           "params_to_string", "duration_to_string"]
