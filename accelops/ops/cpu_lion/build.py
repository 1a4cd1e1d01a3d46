"""Builder of the CPU Lion op (SIMD tier chosen by the engine, OpenMP)."""
from accelops.op_builder import CPUOpBuilder


class CPULionBuilder(CPUOpBuilder):
    """Builds ``csrc/cpu/lion``: one binding file; kernels are header templates in ``csrc/includes``."""

    NAME = "cpu_lion"

    def sources(self):
        """Sources, relative to ``csrc/``."""
        return ["cpu/lion/cpu_lion.cpp"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]
