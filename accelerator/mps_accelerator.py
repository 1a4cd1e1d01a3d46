"""Apple silicon GPUs through ``torch.mps`` (one device, no streams, gloo for communication)."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional, Tuple

from .torch_device import TorchDeviceAccelerator, check_device_index


class MpsAccelerator(TorchDeviceAccelerator):
    name = "mps"
    priority = 60
    comm_backend = "gloo"
    pins_host_memory = False  # unified memory: the GPU reads host tensors as they are

    @classmethod
    def probe(cls) -> Tuple[bool, str]:
        import torch

        if torch.backends.mps.is_available():
            return True, "torch.backends.mps reports an available Metal device"
        return False, "torch.backends.mps is not available"

    def device_count(self) -> int:
        return 1 if self.is_available() else 0

    def is_available(self) -> bool:
        return bool(self._torch.backends.mps.is_available())

    def current_device(self) -> int:
        return 0

    def set_device(self, device_index: int) -> None:
        check_device_index(device_index, self.device_count(), self.name)

    def synchronize(self, device_index: Optional[int] = None) -> None:
        self._module.synchronize()

    def get_rng_state(self, device_index: Optional[int] = None):
        return self._module.get_rng_state()

    def set_rng_state(self, new_state, device_index: Optional[int] = None) -> None:
        self._module.set_rng_state(new_state)

    def manual_seed_all(self, seed: int) -> None:
        self._module.manual_seed(seed)

    def initial_seed(self) -> int:
        return int(self._torch.initial_seed())

    def default_generator(self, device_index: int):
        check_device_index(device_index, self.device_count(), self.name)
        return self._torch.default_generator

    @property
    def Stream(self) -> type:
        raise NotImplementedError("mps exposes no streams")

    def stream(self, stream):
        return contextlib.nullcontext()

    def current_stream(self, device_index: Optional[int] = None):
        return None

    def default_stream(self, device_index: Optional[int] = None):
        return None

    @property
    def Event(self) -> type:
        return self._module.event.Event

    def memory_allocated(self, device_index: Optional[int] = None) -> int:
        return int(self._module.current_allocated_memory())

    def max_memory_allocated(self, device_index: Optional[int] = None) -> int:
        return int(self._module.driver_allocated_memory())

    def reset_peak_memory_stats(self, device_index: Optional[int] = None) -> None:
        """No-op: MPS keeps no peak counters."""

    def memory_reserved(self, device_index: Optional[int] = None) -> int:
        return int(self._module.driver_allocated_memory())

    def max_memory_reserved(self, device_index: Optional[int] = None) -> int:
        return int(self._module.driver_allocated_memory())

    def memory_stats(self, device_index: Optional[int] = None) -> Dict[str, Any]:
        return {
            "allocated_bytes": self.memory_allocated(),
            "driver_allocated_bytes": self.memory_reserved(),
        }

    def total_memory(self, device_index: Optional[int] = None) -> int:
        return int(self._module.recommended_max_memory())

    def available_memory(self, device_index: Optional[int] = None) -> int:
        return max(0, self.total_memory() - self.memory_reserved())

    def is_bf16_supported(self) -> bool:
        return self.is_available()

    def _torch_is_pinned(self, tensor) -> bool:
        """True for every CPU tensor: with unified memory the GPU reads host memory directly."""
        return tensor.device.type == "cpu"


#: DeepSpeed's name for this class.
MPS_Accelerator = MpsAccelerator
