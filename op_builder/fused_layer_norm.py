"""Builder of the fused residual-add + layer norm CUDA op (also ROCm, through hipify)."""
from .builder import CUDAOpBuilder


class FusedLayerNormBuilder(CUDAOpBuilder):
    """Builds ``csrc/cuda/layer_norm``: kernels in a light ``.cu`` file, bindings in a ``.cpp`` file."""

    NAME = "fused_layer_norm"

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
