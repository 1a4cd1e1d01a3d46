"""Builders of the MoE dispatch/combine op: the CPU kernels (SIMD tier chosen by the engine, OpenMP) and the
CUDA kernels (also ROCm, through hipify)."""
from accelops.op_builder import CPUOpBuilder, CUDAOpBuilder


class CPUMoEDispatchBuilder(CPUOpBuilder):
    """Builds ``csrc/cpu/moe_dispatch``: kernels in a light file, bindings in another (parallel compile)."""

    NAME = "cpu_moe_dispatch"

    def sources(self):
        """Sources, relative to ``csrc/``."""
        return ["cpu/moe_dispatch/cpu_moe_dispatch.cpp", "cpu/moe_dispatch/cpu_moe_dispatch_kernel.cpp"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]


class FusedMoEDispatchBuilder(CUDAOpBuilder):
    """Builds ``csrc/cuda/moe_dispatch``: kernels in a light ``.cu`` file, bindings in a ``.cpp`` file."""

    NAME = "fused_moe_dispatch"
    TORCH_PATH = "moe_dispatch/moe_combine run the cpu_moe_dispatch op on CPU tensors, torch index ops on other devices"

    def sources(self):
        """Kernel and binding sources, relative to ``csrc/``."""
        return ["cuda/moe_dispatch/moe_dispatch.cpp", "cuda/moe_dispatch/moe_dispatch_kernel.cu"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]

    def nvcc_args(self):
        """Line info for profilers; no fast-math (results must match the torch reference)."""
        return ["-lineinfo"]
