"""Checks that an optional monitor package is there, with the message that says how to get it."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Optional, Tuple

#: section -> (module imported, what to pip install, minimum version or None). comet_ml before 3.41 has no
#: ``comet_ml.start`` (DeepSpeed 0.19 asks for 3.41 too).
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard", None), "wandb": ("wandb", "wandb", None),
            "comet": ("comet_ml", '"comet_ml>=3.41.0"', (3, 41, 0))}


def _version_tuple(text: str) -> Tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def missing_package_error(section: str, detail: Optional[str] = None) -> ImportError:
    """The ImportError for an enabled ``section`` whose package is absent (or too old: ``detail``)."""
    module, pip_name, _ = PACKAGES[section]
    why = detail or f"the {module!r} package is not installed"
    return ImportError(f"the config's {section!r} section is enabled but {why}; run `pip install {pip_name}` "
                       f"or set {section}.enabled to false")


def require(section: str) -> None:
    """Raise :func:`missing_package_error` unless the package of ``section`` can be imported; imports
    nothing (only looks it up), except comet_ml, whose version is read."""
    module, _, minimum = PACKAGES[section]
    if sys.modules.get(module) is not None:  # imported already (or put there by a test)
        found = True
    else:
        try:
            found = importlib.util.find_spec(module) is not None  # None as well for sys.modules[module] = None
        except (ImportError, ValueError):
            found = False
    if not found:
        raise missing_package_error(section)
    if minimum is not None:
        version = getattr(importlib.import_module(module), "__version__", "0")
        if _version_tuple(version) < minimum:
            raise missing_package_error(section, f"{module} {version} is older than "
                                                 f"{'.'.join(map(str, minimum))}")
