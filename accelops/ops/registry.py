"""The op registry: every folder ``accelops/ops/<op>/`` is one op, found by looking, never listed by hand.

An op folder holds ``build.py`` (its builders, collected into ``accelops.op_builder.ALL_OPS``) and
``verify.py`` (``CHECKS``: op name -> ``Check``, run by ``ds_report --verify``), next to its front end.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType
from typing import Callable, Dict, List, NamedTuple


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


def verify_checks() -> Dict[str, Check]:
    """Op name -> its ``Check``, from every op folder's ``verify.py``."""
    checks: Dict[str, Check] = {}
    for module in op_modules("verify"):
        checks.update(module.CHECKS)
    return checks
