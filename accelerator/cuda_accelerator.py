"""NVIDIA CUDA, and AMD ROCm through the HIP build of torch (which also answers to ``torch.cuda``)."""
from __future__ import annotations

import importlib.util
from typing import Any, Dict, List, Optional, Tuple

from .torch_device import TorchDeviceAccelerator


def triton_installed() -> bool:
    """True when the ``triton`` package can be imported (looked up, not imported)."""
    return importlib.util.find_spec("triton") is not None


class CudaAccelerator(TorchDeviceAccelerator):
    """``torch.cuda`` devices. On a ROCm build of torch ``is_rocm`` is True and HIP variables apply."""

    name = "cuda"
    priority = 100
    comm_backend = "nccl"  # RCCL answers to the same name on ROCm builds
    supports_nvtx_domain = True
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

    def prefer_triton_grouped_mm(self) -> bool:
        """True on CUDA compute capability 7.x and 8.x with Triton installed, where ``torch._grouped_mm``
        loops over groups (its fused kernel needs sm90), or whenever torch lacks ``_grouped_mm``.
        False on ROCm, without Triton and without a device."""
        if self.is_rocm or not self.is_available() or not triton_installed():
            return False
        if not hasattr(self._torch, "_grouped_mm"):
            return True
        major, _minor = self._module.get_device_capability()
        return 7 <= major < 9

    # Graphs
    def create_graph(self):
        return self._module.CUDAGraph()

    def capture_to_graph(self, graph, pool=None, stream=None):
        return self._module.graph(graph, pool=pool, stream=stream)

    def replay_graph(self, graph) -> None:
        graph.replay()

    # NVTX / roctx ranges
    def _nvtx_domain(self, domain: Optional[str]) -> Any:
        """The ``nvtx`` package's domain object for ``domain``; None for no domain or without that package
        (the range then goes to torch's NVTX stack, so pushes and pops still pair up)."""
        if domain is None:
            return None
        domains: Dict[str, Any] = self.__dict__.setdefault("_nvtx_domains", {})
        if domain not in domains:
            try:
                import nvtx
            except ImportError:
                nvtx = None
            domains[domain] = nvtx.get_domain(domain) if nvtx is not None else None
        return domains[domain]

    def range_push(self, msg: str, domain: Optional[str] = None, category: Any = None) -> None:
        nvtx_domain = self._nvtx_domain(domain)
        if nvtx_domain is None:
            self._module.nvtx.range_push(msg)
        else:
            nvtx_domain.push_range(message=msg, category=category)

    def range_pop(self, domain: Optional[str] = None) -> None:
        nvtx_domain = self._nvtx_domain(domain)
        if nvtx_domain is None:
            self._module.nvtx.range_pop()
        else:
            nvtx_domain.pop_range()


#: DeepSpeed's name for this class.
CUDA_Accelerator = CudaAccelerator
