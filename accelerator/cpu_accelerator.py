"""The host CPU as a first-class backend: real memory figures, host timers, gloo (or oneCCL)."""
from __future__ import annotations

import importlib
import os
import time
from typing import Any, Dict, Optional, Tuple

from . import host_memory
from .torch_device import TorchDeviceAccelerator, check_device_index


class HostEvent:
    """An event for synchronous devices: ``record()`` notes the host time."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> None:
        self._time: Optional[float] = None

    def record(self, stream: Any = None) -> None:
        self._time = time.perf_counter()

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        """Nothing to wait for: CPU work is done when the call returns."""

    def wait(self, stream: Any = None) -> None:
        """Nothing to wait for: CPU work is done when the call returns."""

    def elapsed_time(self, end_event: "HostEvent") -> float:
        """Milliseconds between this event's and ``end_event``'s ``record()``."""
        if self._time is None or end_event._time is None:
            raise RuntimeError("both events must be recorded before elapsed_time()")
        return (end_event._time - self._time) * 1000.0


class CpuAccelerator(TorchDeviceAccelerator):
    """The CPU. ``device_count()`` is the number of ranks sharing this host: ``LOCAL_SIZE`` (DeepSpeed's
    launcher, MPI), else ``LOCAL_WORLD_SIZE`` (torchrun), else 1.

    Every local rank uses the one host device, so ``device_name(i)`` is always ``'cpu'``.
    Memory figures describe this process (resident set) and the host (total/available).
    """

    name = "cpu"
    priority = 0
    export_env_prefixes = ["OMP", "KMP", "MKL", "CCL", "I_MPI", "FI_"]
    pins_host_memory = False  # the CPU reads ordinary host memory
    #: Variables naming the ranks on this host, first set one wins.
    local_size_envs = ("LOCAL_SIZE", "LOCAL_WORLD_SIZE")

    def __init__(self) -> None:
        super().__init__()
        value = os.environ.get("LOCAL_RANK", "").strip() or "0"
        if not value.isdigit():
            raise ValueError(f"LOCAL_RANK must be a non-negative integer, got {value!r}")
        self._current_device = int(value)
        self._comm_backend: Optional[str] = None

    @classmethod
    def probe(cls) -> Tuple[bool, str]:
        return True, "the host CPU is always present"

    # ------------------------------------------------------------------ device semantics
    def is_synchronized_device(self) -> bool:
        return True

    # ------------------------------------------------------------------ devices
    def device_name(self, device_index: Optional[int] = None) -> str:
        if device_index is not None:
            check_device_index(device_index, self.device_count(), self.name)
        return "cpu"

    def device(self, device_index: Optional[int] = None):
        if device_index is not None:
            check_device_index(device_index, self.device_count(), self.name)
        return self._torch.device("cpu")

    def set_device(self, device_index: int) -> None:
        self._current_device = check_device_index(device_index, self.device_count(), self.name)

    def current_device(self) -> int:
        return self._current_device

    def current_device_name(self) -> str:
        return "cpu"

    def device_count(self) -> int:
        """Ranks on this host (see the class docstring), so every local rank has a device index.

        Raises ``ValueError`` when the variable in use is not a positive integer.
        """
        for env in self.local_size_envs:
            value = os.environ.get(env, "").strip()
            if value:
                break
        else:
            return 1
        try:
            count = int(value)
        except ValueError:
            raise ValueError(f"{env} must be a positive integer, got {value!r}") from None
        if count < 1:
            raise ValueError(f"{env} must be a positive integer, got {value!r}")
        return count

    def _check_index(self, device_index: Optional[int]) -> None:
        """A given index must name the one CPU device (the contract's TypeError/ValueError otherwise)."""
        if device_index is not None:
            check_device_index(device_index, self.device_count(), self.name)

    def synchronize(self, device_index: Optional[int] = None) -> None:
        self._check_index(device_index)

    def is_available(self) -> bool:
        return True

    # ------------------------------------------------------------------ RNG (the global CPU generator)
    def set_rng_state(self, new_state, device_index: Optional[int] = None) -> None:
        self._check_index(device_index)
        self._torch.set_rng_state(new_state)

    def get_rng_state(self, device_index: Optional[int] = None):
        self._check_index(device_index)
        return self._torch.get_rng_state()

    def manual_seed(self, seed: int) -> None:
        self._torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        self._torch.manual_seed(seed)

    def initial_seed(self) -> int:
        return int(self._torch.initial_seed())

    def default_generator(self, device_index: int):
        check_device_index(device_index, self.device_count(), self.name)
        return self._torch.default_generator

    # ------------------------------------------------------------------ streams and events
    def current_stream(self, device_index: Optional[int] = None):
        self._check_index(device_index)
        return self._torch.cpu.current_stream()

    def default_stream(self, device_index: Optional[int] = None):
        self._check_index(device_index)
        return self._torch.cpu.current_stream()

    @property
    def Event(self) -> type:
        return HostEvent

    # ------------------------------------------------------------------ memory
    def empty_cache(self) -> None:
        """Nothing cached: the CPU allocator returns memory to the C library directly."""

    def memory_allocated(self, device_index: Optional[int] = None) -> int:
        self._check_index(device_index)
        return host_memory.resident_bytes()

    def max_memory_allocated(self, device_index: Optional[int] = None) -> int:
        self._check_index(device_index)
        return host_memory.peak_resident_bytes()

    def reset_peak_memory_stats(self, device_index: Optional[int] = None) -> None:
        self._check_index(device_index)
        host_memory.reset_peak_resident()

    def memory_reserved(self, device_index: Optional[int] = None) -> int:
        self._check_index(device_index)
        return host_memory.resident_bytes()

    def max_memory_reserved(self, device_index: Optional[int] = None) -> int:
        self._check_index(device_index)
        return host_memory.peak_resident_bytes()

    def memory_stats(self, device_index: Optional[int] = None) -> Dict[str, Any]:
        self._check_index(device_index)
        return {
            "allocated_bytes.all.current": host_memory.resident_bytes(),
            "allocated_bytes.all.peak": host_memory.peak_resident_bytes(),
            "host_total_bytes": host_memory.host_total_bytes(),
            "host_available_bytes": host_memory.host_available_bytes(),
        }

    def total_memory(self, device_index: Optional[int] = None) -> int:
        self._check_index(device_index)
        return host_memory.host_total_bytes()

    def available_memory(self, device_index: Optional[int] = None) -> int:
        self._check_index(device_index)
        return host_memory.host_available_bytes()

    # ------------------------------------------------------------------ data types
    def is_bf16_supported(self) -> bool:
        return True

    def is_fp16_supported(self) -> bool:
        """True when oneDNN has native float16 kernels for this CPU (e.g. AVX512-FP16 or AMX-FP16 on x86),
        as torch reports it; False otherwise or when torch was built without oneDNN."""
        torch = self._torch
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported())
        except (AttributeError, RuntimeError):
            return False

    # ------------------------------------------------------------------ host memory
    def _torch_is_pinned(self, tensor) -> bool:
        try:
            return bool(tensor.is_pinned())
        except RuntimeError:
            return False

    # ------------------------------------------------------------------ distributed
    def communication_backend_name(self) -> str:
        """``'ccl'`` when oneCCL's torch bindings import, else ``'gloo'``. Imports them once."""
        if self._comm_backend is None:
            try:
                importlib.import_module("oneccl_bindings_for_pytorch")
                self._comm_backend = "ccl"
            except Exception:
                self._comm_backend = "gloo"
        return self._comm_backend


#: DeepSpeed's name for this class.
CPU_Accelerator = CpuAccelerator
