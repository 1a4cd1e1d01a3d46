"""Optimizers and modules backed by accelops kernels (CPU and CUDA), with pure-torch fallbacks.

Each op lives in its own folder (``cpu_adam/``, ``fused_adam/``, ``layer_norm/``, ...) with its builder
(``build.py``); ``loader`` is the one kernel loader of every front end.

Names are imported lazily on first access, so ``import accelops.ops`` imports no torch and builds
nothing: ``from accelops.ops import CPUAdam`` loads ``accelops.ops.cpu_adam`` only then. DeepSpeed's module
paths exist too: ``accelops.ops.adam`` (``DeepSpeedCPUAdam``, ``FusedAdam``), ``accelops.ops.adagrad``,
``accelops.ops.lion`` (``DeepSpeedCPULion``, ``FusedLion``).

``__compatible_ops__`` is DeepSpeed's table (op name -> whether it can be built or loaded here, plus
DeepSpeed's ``"deepspeed_not_implemented": False`` entry), computed on first access (it runs each op's
compatibility check: the compiler probe, nvcc for CUDA ops) and kept, so edits to the dict persist.
"""
from accelops._lazy import lazy_attributes

_EXPORTS = {
    "CPUAdam": ".cpu_adam",
    "CPUAdagrad": ".cpu_adagrad",
    "CPULion": ".cpu_lion",
    "FusedLayerNorm": ".layer_norm",
    "fused_add_layer_norm": ".layer_norm",
    "FusedAdam": ".fused_adam",
    "FusedLion": ".fused_lion",
    "MoEDispatcher": ".moe_dispatch",
    "moe_combine": ".moe_dispatch",
    "moe_dispatch": ".moe_dispatch",
    "DeepSpeedCPUAdam": ".cpu_adam",
    "DeepSpeedCPUAdagrad": ".cpu_adagrad",
    "DeepSpeedCPULion": ".cpu_lion",
}

__all__ = sorted(_EXPORTS)

_lazy_getattr, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)


def __getattr__(name):
    """Import the submodule that defines ``name`` on first access."""
    if name == "__compatible_ops__":
        from accelops.op_builder import compatible_ops

        table = globals()["__compatible_ops__"] = {**compatible_ops(), "deepspeed_not_implemented": False}
        return table
    return _lazy_getattr(name)
