"""Huawei Ascend (NPU) through torch_npu, which registers ``torch.npu``."""
from __future__ import annotations

from typing import Tuple

from .device_files import probe_device_files
from .torch_device import TorchDeviceAccelerator


class NpuAccelerator(TorchDeviceAccelerator):
    name = "npu"
    priority = 70
    vendor_module = "torch_npu"
    comm_backend = "hccl"
    visible_devices_env_names = ["ASCEND_RT_VISIBLE_DEVICES"]
    export_env_prefixes = ["ASCEND", "HCCL", "LD_LIBRARY", "PATH"]

    @classmethod
    def probe(cls) -> Tuple[bool, str]:
        return probe_device_files(["/dev/davinci[0-9]*"], cls.vendor_module, "Ascend")


#: DeepSpeed's name for this class.
NPU_Accelerator = NpuAccelerator
