"""accelops.op_builder: one builder per op plus the build engine (``builder.py``).

``ALL_OPS`` (op name -> builder class) is collected on first access by importing every module of this
package and keeping the ``OpBuilder`` subclasses that set ``NAME``; importing the package does nothing.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Dict, Optional, Type

from .builder import Compatibility, CPUOpBuilder, CUDAOpBuilder, OpBuilder, OpBuildError

__all__ = ["ALL_OPS", "Compatibility", "CPUOpBuilder", "CUDAOpBuilder", "OpBuildError", "OpBuilder",
           "all_ops", "get_builder_class"]

_ENGINE_MODULES = {"builder", "cpu_tier", "cuda_checks", "jit_cache", "prebuilt", "progress", "setup_support"}
_all_ops: Optional[Dict[str, Type[OpBuilder]]] = None


def all_ops() -> Dict[str, Type[OpBuilder]]:
    """Op name -> builder class for every op file in this package (imported once, sorted by name)."""
    global _all_ops
    if _all_ops is None:
        found = {}
        for info in pkgutil.iter_modules(__path__):
            if info.name in _ENGINE_MODULES:
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
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


def __getattr__(name: str):
    if name == "ALL_OPS":
        return all_ops()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
