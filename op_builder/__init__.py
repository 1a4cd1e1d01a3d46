"""accelops.op_builder: the build engine; each op declares its builder in its own folder of ``accelops.ops``.

The engine: ``builder`` (op declarations: ``OpBuilder`` and its CPU and CUDA flavours), ``pipeline`` (load:
prebuilt, then JIT cache, then JIT build), ``errors``, plus ``jit_cache``, ``prebuilt``, ``cpu_tier``,
``cuda_checks``, ``toolchain`` and ``messages`` (the ``accelops`` logger).

The op declarations live with their ops (``accelops/ops/<op>/build.py``, imported by their front ends), above
this engine. DeepSpeed's callers also reach them from here: ``ALL_OPS`` (op name -> builder class),
``get_builder_class``, builder classes by name (``from accelops.op_builder import CPUAdamBuilder``) and
``compatible_ops``; the prebuild of every op (``setup_support``) uses ``all_ops`` too. Those names are the one
place the engine reaches up to the ops layer (the op registry, ``accelops.ops.registry``), on first access;
loading an op never does.
Importing this package does nothing.
"""
from __future__ import annotations

from typing import Dict, Optional, Type

from .builder import (CPUOpBuilder, CUDAOpBuilder, MissingCUDAException, OpBuilder, TorchCPUOpBuilder,
                      installed_cuda_version, probe_is_compatible)
from .errors import Compatibility, OpBuildError

__all__ = ["ALL_OPS", "Compatibility", "CPUOpBuilder", "CUDAOpBuilder", "MissingCUDAException", "OpBuildError",
           "OpBuilder", "TorchCPUOpBuilder", "all_ops", "compatible_ops", "get_builder_class",
           "installed_cuda_version", "probe_is_compatible"]


def _op_registry():
    """The op registry of ``accelops.ops``: the engine's one reach up a layer, for DeepSpeed's names only (an
    allowed exception of tests/packaging/test_import_graph.py)."""
    from accelops.ops import registry

    return registry


def all_ops() -> Dict[str, Type[OpBuilder]]:
    """Op name -> builder class for every op folder (``accelops/ops/<op>/build.py``), sorted by name."""
    return _op_registry().builders()


def get_builder_class(class_name: str, accelerator_name: Optional[str] = None) -> Type[OpBuilder]:
    """The builder class called ``class_name`` (``"CPUAdamBuilder"``; an op name like ``"cpu_adam"`` works too).

    ``accelerator_name`` (what ``get_accelerator().get_op_builder`` passes) is accepted for DeepSpeed
    compatibility: every builder serves every accelerator, and ``is_compatible()`` says where it cannot
    build. Unknown names raise ``ValueError`` listing the known builders.
    """
    return _op_registry().builder_class(class_name)


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
