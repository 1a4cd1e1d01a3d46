"""Intel Gaudi (HPU) through habana_frameworks, which registers ``torch.hpu``."""
from __future__ import annotations

from typing import Tuple

from .device_files import probe_device_files
from .torch_device import TorchDeviceAccelerator


class HpuAccelerator(TorchDeviceAccelerator):
    name = "hpu"
    priority = 80
    vendor_module = "habana_frameworks.torch"
    comm_backend = "hccl"
    visible_devices_env_names = ["HABANA_VISIBLE_MODULES"]
    export_env_prefixes = ["PT_HPU", "HABANA", "HCCL"]

    @classmethod
    def probe(cls) -> Tuple[bool, str]:
        return probe_device_files(["/dev/accel/accel[0-9]*", "/dev/hl[0-9]*"], cls.vendor_module, "Gaudi")

    def is_bf16_supported(self) -> bool:
        return self.is_available()


#: DeepSpeed's name for this class.
HPU_Accelerator = HpuAccelerator
