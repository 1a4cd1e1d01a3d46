"""accelops.op_builder: the build engine; each op declares its builder in its own folder of ``accelops.ops``.

The engine: ``builder`` (op declarations: ``OpBuilder`` and its CPU and CUDA flavours), ``pipeline`` (load:
prebuilt, then JIT cache, then JIT build), ``errors``, plus ``jit_cache``, ``prebuilt``, ``cpu_tier``,
``cuda_checks``, ``toolchain`` and ``messages`` (the ``accelops`` logger).

``ALL_OPS`` (op name -> builder class) is collected on first access: every package ``accelops.ops.<op>`` with
a ``build`` module is imported and its ``OpBuilder`` subclasses that set ``NAME`` are kept. Builder classes
also import by name (``from accelops.op_builder import CPUAdamBuilder``). Importing this package does nothing.
"""
from __future__ import annotations

import importlib
from typing import Dict, Optional, Type

from .builder import (CPUOpBuilder, CUDAOpBuilder, MissingCUDAException, OpBuilder, TorchCPUOpBuilder,
                      installed_cuda_version, probe_is_compatible)
from .errors import Compatibility, OpBuildError

__all__ = ["ALL_OPS", "Compatibility", "CPUOpBuilder", "CUDAOpBuilder", "MissingCUDAException", "OpBuildError",
           "OpBuilder", "TorchCPUOpBuilder", "all_ops", "compatible_ops", "get_builder_class",
           "installed_cuda_version", "probe_is_compatible"]

_all_ops: Optional[Dict[str, Type[OpBuilder]]] = None


def all_ops() -> Dict[str, Type[OpBuilder]]:
    """Op name -> builder class for every op folder (``accelops/ops/<op>/build.py``), sorted by name."""
    global _all_ops
    if _all_ops is None:
        registry = importlib.import_module("accelops.ops.registry")
        found = {}
        for module in registry.op_modules("build"):
            for value in vars(module).values():
                if isinstance(value, type) and issubclass(value, OpBuilder) and value.__dict__.get("NAME"):
                    found[value.NAME] = value
        _all_ops = dict(sorted(found.items()))
    return _all_ops


def get_builder_class(class_name: str, accelerator_name: Optional[str] = None) -> Type[OpBuilder]:
    """The builder class called ``class_name`` (``"CPUAdamBuilder"``; an op name like ``"cpu_adam"`` works too).

    ``accelerator_name`` (what ``get_accelerator().get_op_builder`` passes) is accepted for DeepSpeed
    compatibility: every builder serves every accelerator, and ``is_compatible()`` says where it cannot
    build. Unknown names raise ``ValueError`` listing the known builders.
    """
    ops = all_ops()
    cls = ops.get(class_name) or next((c for c in ops.values() if c.__name__ == class_name), None)
    if cls is None:
        known = ", ".join(sorted(c.__name__ for c in ops.values()))
        raise ValueError(f"unknown op builder {class_name!r}; known: {known}")
    return cls


def compatible_ops() -> Dict[str, bool]:
    """Op name -> whether it can be built or loaded here, as DeepSpeed's ``git_version_info.compatible_ops``
    (runs each op's compatibility check: the compiler probe, nvcc for CUDA ops; a check that raises is False)."""
    return {name: bool(probe_is_compatible(cls())) for name, cls in all_ops().items()}


def __getattr__(name: str):
    if name == "ALL_OPS":
        return all_ops()
    if name.endswith("Builder") and not name.startswith("_"):
        cls = next((c for c in all_ops().values() if c.__name__ == name), None)
        if cls is not None:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    """The package's names plus every op's builder class name (they resolve through ``__getattr__``)."""
    return sorted(set(globals()) | {cls.__name__ for cls in all_ops().values()})
