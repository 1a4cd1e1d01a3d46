"""Loading an op's shared library and reaching its operators (torch's stable ABI).

Every op's library registers its schema and kernels in C++ under a namespace equal to its module name
(``csrc/includes/accelops_stable.h``), so ``torch.ops.<module name>.<op>`` is the operator. The library
uses only torch's stable C ABI: built against the stable headers of torch X.Y, it loads under any torch
>= X.Y (its *ABI floor*), with no Python or pybind symbols.

Loading goes through :func:`load_library`, which loads each namespace from one file only: torch aborts the
process when a second library registers an already registered namespace, so that case is an ImportError
here instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

_loaded: Dict[str, str] = {}  # namespace -> real path of the library that registered it


def _major_minor(version: str) -> Tuple[int, int]:
    parts = str(version).split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def abi_floor() -> str:
    """``"X.Y"``: the torch release whose stable headers a build here compiles against, so the oldest torch
    its library loads under."""
    import torch

    return "%d.%d" % _major_minor(torch.__version__)


def floor_problem(floor: Any) -> Optional[str]:
    """Why a library with ABI floor ``floor`` ("X.Y") cannot load under this torch, or None when it can."""
    import torch

    try:
        needed = _major_minor(str(floor))
    except (ValueError, IndexError):
        return f"its recorded ABI floor {floor!r} is not a torch version"
    if _major_minor(torch.__version__) < needed:
        return f"built against torch {floor}'s stable ABI, newer than this torch {torch.__version__}"
    return None


class OpLibrary:
    """The operators of one loaded library: attribute ``name`` is ``torch.ops.<namespace>.<name>``
    (AttributeError when the library has no such operator)."""

    def __init__(self, namespace: str, path: Path) -> None:
        self.namespace = namespace
        self.path = Path(path)
        self.__file__ = str(path)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        import torch

        try:
            return getattr(getattr(torch.ops, self.namespace), name)
        except (AttributeError, RuntimeError):
            raise AttributeError(f"op library {self.namespace} ({self.path.name}) has no operator {name!r}") from None

    def __repr__(self) -> str:
        return f"<OpLibrary {self.namespace} from {self.path}>"


def load_library(path: Path, namespace: str) -> OpLibrary:
    """Load the library ``path`` whose operators live in ``namespace`` (once per process; loading the same
    file again returns at once). ImportError when another file already registered ``namespace`` in this
    process, or when the dynamic loader refuses the file (missing symbols: a torch older than its ABI floor)."""
    real = os.path.realpath(path)
    previous = _loaded.get(namespace)
    if previous is not None:
        if previous != real:
            raise ImportError(f"op namespace {namespace} is already loaded from {previous}; a second library for it "
                              f"({real}) cannot be loaded into the same process")
        return OpLibrary(namespace, Path(path))
    import torch

    try:
        torch.ops.load_library(real)
    except OSError as exc:
        raise ImportError(f"cannot load {real}: {exc}") from exc
    _loaded[namespace] = real
    return OpLibrary(namespace, Path(path))
