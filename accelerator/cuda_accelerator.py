"""NVIDIA CUDA, and AMD ROCm through the HIP build of torch (which also answers to ``torch.cuda``)."""
from __future__ import annotations

from typing import List, Tuple

from .torch_device_accelerator import TorchDeviceAccelerator


class CudaAccelerator(TorchDeviceAccelerator):
    """``torch.cuda`` devices. On a ROCm build of torch ``is_rocm`` is True and HIP variables apply."""

    name = "cuda"
    priority = 100
    comm_backend = "nccl"  # RCCL answers to the same name on ROCm builds
    export_env_prefixes = ["NCCL", "CUDA", "RCCL", "HIP", "ROCR", "PYTORCH_CUDA_ALLOC_CONF"]

    @classmethod
    def probe(cls) -> Tuple[bool, str]:
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - torch is a dependency
            return False, f"torch is not importable: {exc}"
        if torch.version.cuda is None and torch.version.hip is None:
            return False, f"torch {torch.__version__} was built without CUDA or ROCm"
        count = torch.cuda.device_count()
        if count == 0:
            return False, "torch has CUDA/ROCm support but no device is visible"
        flavour = f"ROCm {torch.version.hip}" if torch.version.hip else f"CUDA {torch.version.cuda}"
        return True, f"{count} {flavour} device(s) visible to torch"

    @property
    def is_rocm(self) -> bool:
        """True on a ROCm (HIP) build of torch."""
        return self._torch.version.hip is not None

    def visible_devices_envs(self) -> List[str]:
        return ["HIP_VISIBLE_DEVICES"] if self.is_rocm else ["CUDA_VISIBLE_DEVICES"]

    def is_fp16_supported(self) -> bool:
        if not self.is_available():
            return False
        if self.is_rocm:
            return True
        major, _minor = self._module.get_device_capability()
        return major >= 6

    def is_bf16_supported(self) -> bool:
        if not self.is_available():
            return False
        return bool(self._module.is_bf16_supported())

    def is_triton_supported(self) -> bool:
        if not self.is_available():
            return False
        if self.is_rocm:
            return True
        major, _minor = self._module.get_device_capability()
        return major >= 7

    # Graphs
    def create_graph(self):
        return self._module.CUDAGraph()

    def capture_to_graph(self, graph, pool=None, stream=None):
        return self._module.graph(graph, pool=pool, stream=stream)

    def replay_graph(self, graph) -> None:
        graph.replay()

    # NVTX / roctx ranges
    def range_push(self, msg: str) -> None:
        self._module.nvtx.range_push(msg)

    def range_pop(self) -> None:
        self._module.nvtx.range_pop()
