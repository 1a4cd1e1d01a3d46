"""DeepSpeed's op-builder names on accelops' engine.

A builder written against DeepSpeed's API (``super().__init__(name=...)``, ``NAME``, ``BUILD_VAR``, ``name``,
``absolute_name()``, ``sources()``, ``include_paths()``, ``cxx_args()``, ``nvcc_args()``, ``extra_ldflags()``,
``is_compatible(verbose=...)``, ``load(verbose=...)``, ``jit_load()``, ``builder()``) builds and loads through
accelops' cache, locks and checks. Source paths are relative to ``csrc()`` (accelops' ``csrc/``) or absolute;
DeepSpeed resolves relative ones against its own tree, which accelops does not have.
"""
from __future__ import annotations

from typing import List, Optional, Tuple


class MissingCUDAException(Exception):
    """No CUDA toolkit was found (DeepSpeed's exception of the same name)."""


def installed_cuda_version(name: str = "") -> Tuple[int, int]:
    """``(major, minor)`` of the CUDA toolkit the builders use (``nvcc --version``); ``MissingCUDAException``
    naming ``name`` (the op asking) when there is none."""
    from . import cuda_checks

    nvcc = cuda_checks.nvcc_path()
    if nvcc is None:
        who = f"{name}: " if name else ""
        raise MissingCUDAException(f"{who}no CUDA toolkit found (CUDA_HOME={cuda_checks.cuda_home()!r}); install it "
                                   f"or set CUDA_HOME")
    return cuda_checks.nvcc_version(nvcc)


class DeepSpeedBuilderAPI:
    """The DeepSpeed-named methods every accelops builder has (mixed into ``OpBuilder``)."""

    NAME: str = ""
    BUILD_VAR: str = ""  # set per class from NAME: DS_BUILD_<NAME>

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
        """The op's module from the JIT cache or a JIT build, never a prebuilt module (DeepSpeed's ``jit_load``)."""
        from . import pipeline

        return pipeline.load(self, verbose, use_prebuilt=False).module

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
