"""The op registry: every folder ``accelops/ops/<op>/`` is one op, found by looking, never listed by hand.

An op folder holds ``build.py`` (its builders, listed by :func:`builders`) and ``verify.py`` (``CHECKS``:
op name -> ``Check``, run by ``ds_report --verify``), next to its front end. A front end imports the builder
class from its own ``build.py``; this registry serves whoever needs every op (``ds_report``, prebuilds, and
DeepSpeed's ``accelops.op_builder.ALL_OPS`` and ``get_accelerator().get_op_builder(name)``).
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType
from typing import Callable, Dict, List, NamedTuple, Optional, Type

from accelops.op_builder.builder import OpBuilder

_builders: Optional[Dict[str, Type[OpBuilder]]] = None


class Check(NamedTuple):
    """A verify check: ``run()`` compares the op with its torch reference through its front end and returns
    what it compared (raising when it differs or the front end ran pure torch); ``device`` is where it runs."""

    run: Callable[[], str]
    device: str = "cpu"


def op_modules(role: str) -> List[ModuleType]:
    """``accelops.ops.<op>.<role>`` of every op folder that has one (``role`` is ``build`` or ``verify``)."""
    modules = []
    for info in sorted(pkgutil.iter_modules(_ops_path()), key=lambda i: i.name):
        name = f"{__package__}.{info.name}.{role}"
        if info.ispkg and importlib.util.find_spec(name) is not None:
            modules.append(importlib.import_module(name))
    return modules


def _ops_path() -> List[str]:
    return importlib.import_module(__package__).__path__


def builders() -> Dict[str, Type[OpBuilder]]:
    """Op name -> builder class, from every op folder's ``build.py`` (its ``OpBuilder`` subclasses that set
    ``NAME``), sorted by name; collected once per process."""
    global _builders
    if _builders is None:
        found = {}
        for module in op_modules("build"):
            for value in vars(module).values():
                if isinstance(value, type) and issubclass(value, OpBuilder) and value.__dict__.get("NAME"):
                    found[value.NAME] = value
        _builders = dict(sorted(found.items()))
    return _builders


def builder_class(name: str) -> Type[OpBuilder]:
    """The builder class called ``name`` (``"CPUAdamBuilder"``) or building the op ``name`` (``"cpu_adam"``);
    ``ValueError`` listing the known builders for any other name."""
    ops = builders()
    cls = ops.get(name) or next((c for c in ops.values() if c.__name__ == name), None)
    if cls is None:
        known = ", ".join(sorted(c.__name__ for c in ops.values()))
        raise ValueError(f"unknown op builder {name!r}; known: {known}")
    return cls


def verify_checks() -> Dict[str, Check]:
    """Op name -> its ``Check``, from every op folder's ``verify.py``."""
    checks: Dict[str, Check] = {}
    for module in op_modules("verify"):
        checks.update(module.CHECKS)
    return checks
