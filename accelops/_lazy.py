"""Lazy package attributes: a package's names and subpackages are imported on first access, so that
importing the package itself stays cheap (``import accelops`` imports no torch)."""
from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Dict, Iterable, List, MutableMapping, Tuple


def lazy_attributes(package: str, namespace: MutableMapping[str, Any], exports: Dict[str, str],
                    submodules: Iterable[str] = ()) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for the package ``package`` whose globals are ``namespace``. A name in
    ``exports`` (name -> the module defining it, absolute or relative to ``package``) is imported on first
    access and then kept in ``namespace``; a name in ``submodules`` is the submodule ``package.<name>``
    (whose import binds it as an attribute). Any other name is an AttributeError."""
    submodules = tuple(submodules)

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return import_module(f"{package}.{name}")
        if name in exports:
            value = getattr(import_module(exports[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(exports) | set(submodules))

    return __getattr__, __dir__
