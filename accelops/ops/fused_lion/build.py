"""Builder of the multi-tensor fused Lion CUDA op (also ROCm, through hipify)."""
from accelops.op_builder import CUDAOpBuilder


class FusedLionBuilder(CUDAOpBuilder):
    """Builds ``csrc/cuda/lion``: kernel in a light ``.cu`` file, bindings in a ``.cpp`` file."""

    NAME = "fused_lion"
    TORCH_PATH = "FusedLion steps with its pure-torch path (CPU and every other device)"

    def sources(self):
        """Kernel and binding sources, relative to ``csrc/``."""
        return ["cuda/lion/fused_lion.cpp", "cuda/lion/fused_lion_kernel.cu"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]

    def cxx_args(self):
        """No op-specific host-compiler flags."""
        return []

    def nvcc_args(self):
        """Line info for profilers; no fast-math and no fused multiply-add: each product and sum is rounded
        as in the torch path, so both take the same sign where ``beta1*m + (1-beta1)*g`` cancels."""
        return ["-lineinfo", "--fmad=false"]

    def hipcc_args(self):
        """The same rounding on ROCm: no contraction into fused multiply-adds."""
        return ["-ffp-contract=off"]
