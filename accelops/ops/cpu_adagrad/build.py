"""Builder of the CPU Adagrad op (SIMD tier chosen by the engine, OpenMP)."""
from accelops.op_builder import CPUOpBuilder


class CPUAdagradBuilder(CPUOpBuilder):
    """Builds ``csrc/cpu/adagrad``: one binding file; kernels are header templates in ``csrc/includes``."""

    NAME = "cpu_adagrad"

    def sources(self):
        """Sources, relative to ``csrc/``."""
        return ["cpu/adagrad/cpu_adagrad.cpp"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]
