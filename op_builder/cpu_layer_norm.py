"""Builder of the CPU fused residual-add + layer norm op (SIMD tier chosen by the engine, OpenMP)."""
from .builder import CPUOpBuilder


class CPULayerNormBuilder(CPUOpBuilder):
    """Builds ``csrc/cpu/layer_norm``: kernels in a light file, bindings in another (parallel compile)."""

    NAME = "cpu_layer_norm"

    def sources(self):
        """Sources, relative to ``csrc/``."""
        return ["cpu/layer_norm/cpu_layer_norm.cpp", "cpu/layer_norm/cpu_layer_norm_kernel.cpp"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]

    def cxx_args(self):
        """No fast-math and no implicit FMA contraction: the kernels round exactly as written (like torch)."""
        return ["-ffp-contract=off"]
