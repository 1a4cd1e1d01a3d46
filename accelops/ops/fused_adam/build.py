"""Builder of the multi-tensor fused Adam/AdamW CUDA op (also ROCm, through hipify)."""
from accelops.op_builder import CUDAOpBuilder


class FusedAdamBuilder(CUDAOpBuilder):
    """Builds ``csrc/cuda/adam``: kernel in a light ``.cu`` file, bindings in a ``.cpp`` file."""

    NAME = "fused_adam"
    TORCH_PATH = "FusedAdam steps with its pure-torch path (CPU and every other device)"

    def sources(self):
        """Kernel and binding sources, relative to ``csrc/``."""
        return ["cuda/adam/fused_adam.cpp", "cuda/adam/fused_adam_kernel.cu"]

    def include_paths(self):
        """Header folders, relative to ``csrc/``."""
        return ["includes"]

    def cxx_args(self):
        """No op-specific host-compiler flags."""
        return []

    def nvcc_args(self):
        """Line info for profilers; no fast-math (the update must match torch's rounding)."""
        return ["-lineinfo"]
