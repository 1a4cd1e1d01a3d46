"""DeepSpeed's ``deepspeed.profiling``: the flops profiler (:mod:`accelops.profiling.flops_profiler`),
imported on first access so that importing this package imports no torch."""
from .._lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, globals(), {}, ("flops_profiler",))
