"""The one kernel loader of every front end: load an op's extension once per process, or say why not.

Each op's front end makes one ``KernelLoader`` for the builder class next to it, in its own folder
(``kernel_loader(CPUAdamBuilder, ...)`` with ``from .build import CPUAdamBuilder``): loading an op goes down
to the build engine only, never through the accelerator or a lookup by name. The first ``module()`` call
loads (prebuilt, JIT cache or JIT build); a failure warns once (``RuntimeWarning``) and is not retried, and
the front end runs its pure-torch path. ``backend`` is ``"kernel"`` or ``"torch"`` and ``reason`` says why
torch; ``origin`` and ``variant`` say where the loaded module came from, ``kernel_reason`` says it in a
sentence.
"""
from __future__ import annotations

import os
import sys
import warnings
from types import ModuleType
from typing import Dict, Optional, Type

__all__ = ["CPU_FALLBACK_ENV", "KernelLoader", "kernel_loader"]

#: Set to 1 to make the CPU front ends use their pure-torch path (no build).
CPU_FALLBACK_ENV = "ACCELOPS_CPU_OPS_FALLBACK"

_loaders: Dict[type, "KernelLoader"] = {}

#: Where a loaded module came from (``Loaded.origin`` of the build engine), in words.
ORIGINS = {"prebuilt": "the prebuilt module installed with accelops", "cache": "the JIT cache",
           "build": "a JIT build in this process"}


class KernelLoader:
    """Loads the extension of one op builder class (an ``OpBuilder`` subclass) for its front ends (see the
    module docstring).

    ``warning`` is the one-time message of a failed load, with ``{reason}`` for the cause; ``fallback_env``
    names a variable that, when set to a non-zero value, makes the front end use pure torch silently.
    """

    def __init__(self, builder_class: Type, warning: str, fallback_env: Optional[str] = None) -> None:
        self.builder_class = builder_class
        self.warning = warning
        self.fallback_env = fallback_env
        self.reset()

    def reset(self) -> None:
        """Forget any load or failure: the next ``module()`` call tries again."""
        self._module: Optional[ModuleType] = None
        self._failure: Optional[str] = None
        self.origin: Optional[str] = None
        self.variant: Optional[str] = None
        self.op_name: Optional[str] = None
        self.path: Optional[str] = None

    def forced_fallback(self) -> bool:
        """True while ``fallback_env`` asks for the pure-torch path."""
        return bool(self.fallback_env) and os.environ.get(self.fallback_env, "0") not in ("", "0")

    def module(self) -> Optional[ModuleType]:
        """The loaded extension, or None when the front end must use its pure-torch path (forced, or the
        load failed: one ``RuntimeWarning`` per process naming the cause). May build the op on first call."""
        if self.forced_fallback() or self._failure is not None:
            return None
        if self._module is None:
            try:
                builder = self.builder_class()
                loaded = builder.load_with_origin(verbose=False)
            except Exception as exc:  # any build/load failure: the torch path still gives correct results
                self._failure = str(exc) or type(exc).__name__
                warnings.warn(self.warning.format(reason=self._failure), RuntimeWarning,
                              stacklevel=callers_stacklevel())
                return None
            self._module, self.origin, self.variant = loaded.module, loaded.origin, loaded.variant
            self.op_name, self.path = getattr(builder, "NAME", None), getattr(loaded.module, "__file__", None)
        return self._module

    @property
    def backend(self) -> str:
        """``"kernel"`` when the extension runs, else ``"torch"`` (loads the op on first use)."""
        return "kernel" if self.module() is not None else "torch"

    @property
    def reason(self) -> Optional[str]:
        """Why the front end runs pure torch (None while the kernel runs or before the first load)."""
        if self.forced_fallback():
            return f"{self.fallback_env} is set"
        return None if self._failure is None else f"the op could not be loaded: {self._failure}"

    @property
    def kernel_reason(self) -> Optional[str]:
        """Why the kernel runs, in a sentence: which op, its variant (the CPU tier, or cuda/hip) and where its
        module was loaded from (prebuilt, JIT cache, JIT build) with the file; None unless it is loaded."""
        if self._module is None or self.forced_fallback():
            return None
        what = "variant" if self.variant in ("cuda", "hip", "host") else "CPU tier"
        where = ORIGINS.get(str(self.origin), str(self.origin))
        op = self.op_name or self.builder_class.__name__
        return (f"the compiled {op} op runs ({what} {self.variant}), loaded from {where}" + (f": {self.path}" if self.path else ""))

    @property
    def backend_reason(self) -> Optional[str]:
        """Why the front end runs what it runs: ``kernel_reason`` on the kernel path, ``reason`` on the torch path
        (loads the op on first use)."""
        return self.kernel_reason if self.module() is not None else self.reason


def callers_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning name the first line outside accelops and torch (the user's
    ``opt.step()``), however deep the op dispatch is."""
    frame, level = sys._getframe(2), 2  # 1 is the frame that warns
    while frame is not None and str(frame.f_globals.get("__name__", "")).split(".")[0] in ("accelops", "torch"):
        frame, level = frame.f_back, level + 1
    return level


def kernel_loader(builder_class: Type, warning: Optional[str] = None,
                  fallback_env: Optional[str] = None) -> KernelLoader:
    """The process-wide loader of ``builder_class`` (made on first call with ``warning`` and ``fallback_env``)."""
    if builder_class not in _loaders:
        name = builder_class.__name__
        warning = warning or f"accelops: {name} op unavailable ({{reason}}); using the pure-torch implementation"
        _loaders[builder_class] = KernelLoader(builder_class, warning, fallback_env)
    return _loaders[builder_class]
