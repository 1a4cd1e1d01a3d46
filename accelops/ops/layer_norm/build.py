"""Builders of the fused residual-add + layer norm op: the CPU kernels (SIMD tier chosen by the engine, OpenMP)
and the CUDA kernels (also ROCm, through hipify)."""
from accelops.op_builder import CPUOpBuilder, CUDAOpBuilder


class CPULayerNormBuilder(CPUOpBuilder):
    """Builds ``csrc/cpu/layer_norm``: kernels in a light file, bindings in another (parallel compile)."""

    NAME = "cpu_layer_norm"

    def sources(self):
        """Sources, relative to ``csrc/``."""
        return ["cpu/layer_norm/cpu_layer_norm.cpp", "cpu/layer_norm/cpu_layer_norm_kernel.cpp"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]

class FusedLayerNormBuilder(CUDAOpBuilder):
    """Builds ``csrc/cuda/layer_norm``: kernels in a light ``.cu`` file, bindings in a ``.cpp`` file."""

    NAME = "fused_layer_norm"
    TORCH_PATH = "FusedLayerNorm runs the cpu_layer_norm op on CPU tensors, pure torch on other devices"

    def sources(self):
        """Kernel and binding sources, relative to ``csrc/``."""
        return ["cuda/layer_norm/layer_norm.cpp", "cuda/layer_norm/layer_norm_kernel.cu"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]

    def cxx_args(self):
        """No op-specific host-compiler flags."""
        return []

    def nvcc_args(self):
        """Line info for profilers; no fast-math (results must match F.layer_norm closely)."""
        return ["-lineinfo"]
