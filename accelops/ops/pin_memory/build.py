"""Builder of the page-locked host memory op (``csrc/cpu/pin_memory``): a plain C++ op, no CPU tier, no OpenMP."""
import sys

from accelops.op_builder import OpBuilder


class PinMemoryBuilder(OpBuilder):
    """DeepSpeed's ``PinMemoryBuilder`` (``DS_BUILD_PIN_MEMORY``). ``load()`` and ``jit_load()`` return DeepSpeed's
    module shape: ``load().pin_handle()`` makes a handle (:class:`accelops.ops.pin_memory.handle.PinHandle`); the
    library's operators are attributes too. POSIX only (mmap and mlock): not compatible on Windows."""

    NAME = "pin_memory"

    def sources(self):
        """Sources, relative to ``csrc/``."""
        return ["cpu/pin_memory/pin_memory.cpp"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]

    def extra_requirements(self):
        """Windows has no mmap/mlock."""
        return ["page-locked allocation needs POSIX mmap and mlock; this is Windows"] if sys.platform == "win32" else []

    def load(self, verbose: bool = False):
        """The op's module (prebuilt, JIT cache or JIT build) with DeepSpeed's ``pin_handle``; ``OpBuildError``
        naming the cause when it cannot be loaded."""
        from .handle import PinMemoryModule

        return PinMemoryModule(super().load(verbose))

    def jit_load(self, verbose: bool = True):
        """As ``load()``, from the JIT cache or a JIT build only."""
        from .handle import PinMemoryModule

        return PinMemoryModule(super().jit_load(verbose))
