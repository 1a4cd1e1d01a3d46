"""Builder of the CPU Adam/AdamW op (SIMD tier chosen by the engine, OpenMP)."""
from accelops.op_builder import CPUOpBuilder


class CPUAdamBuilder(CPUOpBuilder):
    """Builds ``csrc/cpu/adam``: one binding file; kernels are header templates in ``csrc/includes``."""

    NAME = "cpu_adam"

    def sources(self):
        """Sources, relative to ``csrc/``."""
        return ["cpu/adam/cpu_adam.cpp"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]
