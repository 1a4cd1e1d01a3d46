"""Loads the CPU op extensions once per process, or records why the pure-torch path is used.

``ACCELOPS_CPU_OPS_FALLBACK=1`` in the environment forces the pure-torch path (used by tests to check
that both paths agree). A failed load warns once per op and is not retried.
"""
import os
import warnings

__all__ = ["load_cpu_op", "cpu_op_path"]

_modules = {}
_failed = {}


def _forced_fallback() -> bool:
    return os.environ.get("ACCELOPS_CPU_OPS_FALLBACK", "0") not in ("", "0")


def load_cpu_op(builder_class: str):
    """The built extension for ``builder_class`` (e.g. ``"CPUAdamBuilder"``), or None.

    None means the caller must use its pure-torch implementation: either the fallback is forced by
    ``ACCELOPS_CPU_OPS_FALLBACK=1`` (silently) or the build/load failed (one ``RuntimeWarning`` per op
    and process, naming the cause).
    """
    if _forced_fallback():
        return None
    if builder_class in _modules:
        return _modules[builder_class]
    if builder_class in _failed:
        return None
    try:
        from accelops.accelerator import get_accelerator

        builder = get_accelerator().create_op_builder(builder_class)
        if builder is None:
            raise RuntimeError(f"the current accelerator has no {builder_class}")
        module = builder.load(verbose=False)
    except Exception as exc:  # any build/load failure: the torch path still gives correct results
        _failed[builder_class] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"accelops: {builder_class} op unavailable ({_failed[builder_class]}); "
                      f"using the pure-torch implementation", RuntimeWarning, stacklevel=3)
        return None
    _modules[builder_class] = module
    return module


def cpu_op_path(builder_class: str) -> str:
    """``"kernel"`` if the op's extension loads, else ``"torch"`` (triggers the load on first call)."""
    return "kernel" if load_cpu_op(builder_class) is not None else "torch"
