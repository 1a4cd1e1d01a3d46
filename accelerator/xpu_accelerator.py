"""Intel GPUs (XPU) through torch's native ``torch.xpu``; oneCCL bindings are optional."""
from __future__ import annotations

import importlib.util
from typing import Tuple

from .torch_device import TorchDeviceAccelerator


class XpuAccelerator(TorchDeviceAccelerator):
    name = "xpu"
    priority = 90
    visible_devices_env_names = ["ZE_AFFINITY_MASK"]
    export_env_prefixes = ["I_MPI", "CCL", "FI_", "ZE_", "SYCL"]

    @classmethod
    def probe(cls) -> Tuple[bool, str]:
        import torch

        xpu = getattr(torch, "xpu", None)
        if xpu is None:
            return False, f"torch {torch.__version__} has no torch.xpu"
        try:
            count = xpu.device_count() if xpu.is_available() else 0
        except Exception as exc:  # driver errors must not break detection
            return False, f"torch.xpu failed: {exc}"
        if count == 0:
            return False, "torch.xpu reports no device"
        return True, f"{count} XPU device(s) visible to torch"

    def communication_backend_name(self) -> str:
        import torch.distributed as dist

        is_xccl = getattr(dist, "is_xccl_available", None)
        if is_xccl is not None and is_xccl():
            return "xccl"
        if importlib.util.find_spec("oneccl_bindings_for_pytorch") is not None:
            return "ccl"
        return "xccl"

    def is_triton_supported(self) -> bool:
        return self.is_available()


#: DeepSpeed's name for this class.
XPU_Accelerator = XpuAccelerator
