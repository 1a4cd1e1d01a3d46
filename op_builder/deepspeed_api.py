"""DeepSpeed's op-builder names on accelops' engine.

A builder written against DeepSpeed's API (``super().__init__(name=...)``, ``NAME``, ``BUILD_VAR``, ``name``,
``absolute_name()``, ``sources()``, ``include_paths()``, ``cxx_args()``, ``nvcc_args()``, ``extra_ldflags()``,
``is_compatible(verbose=...)``, ``load(verbose=...)``, ``jit_load()``, ``builder()``) builds and loads through
accelops' cache, locks and checks. Source paths are relative to ``csrc()`` (accelops' ``csrc/``) or absolute;
DeepSpeed resolves relative ones against its own tree, which accelops does not have.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple


class MissingCUDAException(Exception):
    """No CUDA toolkit was found (DeepSpeed's exception of the same name)."""


def installed_cuda_version(name: str = "") -> Tuple[int, int]:
    """``(major, minor)`` of the CUDA toolkit torch's extension builder compiles with (DeepSpeed's meaning:
    ``torch.utils.cpp_extension.CUDA_HOME``'s ``bin/nvcc --version``). ``MissingCUDAException`` naming ``name``
    (the op asking) when there is none: no CUDA_HOME (also any CPU-only torch), one without ``bin/nvcc`` (a
    runtime-only install), or an nvcc that does not run."""
    import os
    import subprocess
    import sys

    from torch.utils import cpp_extension

    from . import cuda_checks

    who = f"{name}: " if name else ""
    home = cpp_extension.CUDA_HOME
    nvcc = os.path.join(home, "bin", "nvcc.exe" if sys.platform == "win32" else "nvcc") if home else None
    if nvcc is None or not os.path.isfile(nvcc):
        where = f"CUDA_HOME={home!r} has no bin/nvcc" if home else "torch's extension builder has no CUDA_HOME"
        raise MissingCUDAException(f"{who}no CUDA toolkit found ({where}), unable to compile CUDA op(s); install the "
                                   f"toolkit and set CUDA_HOME to its folder")
    try:
        return cuda_checks.nvcc_version(nvcc)
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        raise MissingCUDAException(f"{who}cannot run {nvcc} ({exc}), unable to compile CUDA op(s)") from exc


def probe_is_compatible(builder, verbose: bool = False):
    """``builder.is_compatible(verbose)``, or False when the check itself raises (a warning names the builder and
    the error): DeepSpeed's guard for probing every op, so one op that cannot answer (a GPU but no CUDA toolkit)
    does not fail the whole probe."""
    try:
        return builder.is_compatible(verbose)
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means "not compatible"
        from .messages import log

        name = getattr(builder, "NAME", "") or getattr(builder, "name", "") or type(builder).__name__
        log.warning("accelops: %s: compatibility check failed (%s: %s); treating the op as not compatible", name,
                    type(exc).__name__, exc)
        return False


class DeepSpeedBuilderAPI:
    """The DeepSpeed-named methods every accelops builder has (mixed into ``OpBuilder``)."""

    NAME: str = ""
    BUILD_VAR: str = ""  # set per class from NAME: DS_BUILD_<NAME>
    #: DeepSpeed's attribute: True makes ``compute_capability_args`` pick the arches for a JIT build and return no
    #: flags (the build makes them). accelops' engine never sets it; a builder may, as DeepSpeed's own do.
    jit_mode: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("NAME") and not cls.__dict__.get("BUILD_VAR"):
            cls.BUILD_VAR = f"DS_BUILD_{cls.NAME.upper()}"

    def extra_ldflags(self) -> List[str]:
        """Op-specific extra linker flags."""
        return []

    def absolute_name(self) -> str:
        """The import name of this op's prebuilt module for this machine's variant
        (``accelops.prebuilt.<module>``)."""
        return f"accelops.prebuilt.{self.module_name(self.variant())}"

    def jit_load(self, verbose: bool = True):
        """The op's module from the JIT cache or a JIT build, never a prebuilt module (DeepSpeed's ``jit_load``).

        As DeepSpeed's: while it runs, ``jit_mode`` is True and ``_jit_arch_list`` holds ``TORCH_CUDA_ARCH_LIST`` as
        it was (stripped; None when unset or blank), so a builder's ``nvcc_args`` calling
        ``compute_capability_args`` takes its arches from there. Afterwards, built, found in the cache or failed,
        ``TORCH_CUDA_ARCH_LIST`` is exactly as before (the same value, or unset), ``_jit_arch_list`` is None and
        ``jit_mode`` is what it was."""
        from . import pipeline

        saved_mode = self.jit_mode
        self.jit_mode = True
        self._jit_arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip() or None
        try:
            return pipeline.load(self, verbose, use_prebuilt=False).module  # restores TORCH_CUDA_ARCH_LIST itself
        finally:
            self._jit_arch_list = None
            self.jit_mode = saved_mode

    def builder(self):
        """The setuptools extension that prebuilds this op for this machine's variant, named ``absolute_name()``,
        with absolute source paths (DeepSpeed's ``builder()``)."""
        return self.setuptools_extension(self.absolute_name(), self.variant(), str(self.csrc()))

    @staticmethod
    def is_rocm_pytorch() -> bool:
        """True on a ROCm (HIP) build of torch; False without torch."""
        try:
            import torch
        except ImportError:
            return False
        return torch.version.hip is not None

    @staticmethod
    def installed_cuda_version(name: str = "") -> Tuple[int, int]:
        """See the module-level ``installed_cuda_version``."""
        return installed_cuda_version(name)


def cross_compile_arches(cross_compile_archs: Optional[object]) -> Optional[List[str]]:
    """DeepSpeed's ``cross_compile_archs`` (``"8.0;9.0"``, ``"8.0 9.0"`` or a list) as ``["8.0", "9.0"]``; None
    when not given."""
    if cross_compile_archs is None:
        return None
    items = cross_compile_archs.replace(";", " ").replace(",", " ").split() if isinstance(cross_compile_archs, str) \
        else [str(a) for a in cross_compile_archs]
    return [a for a in items if a]
