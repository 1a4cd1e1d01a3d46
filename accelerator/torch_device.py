"""A generic backend that delegates to ``torch.get_device_module(name)``.

Device files (cuda, xpu, npu, hpu, mps) subclass it and override only what differs: the
communication backend, visible-devices variables, graphs, profiling ranges, vendor imports.

Not named ``*_accelerator.py``: as in DeepSpeed's package, a file of that name is one backend and defines
exactly one ``<NAME>_Accelerator`` class (DeepSpeed's tests and tools enumerate the files that way).
"""
from __future__ import annotations

import functools
import os
from typing import Any, ContextManager, Dict, List, Optional

from .abstract_accelerator import Accelerator
from .tensor_types import TENSOR_TYPES, TensorType


def check_device_index(device_index: Any, count: int, name: str) -> int:
    """Return ``device_index`` as an int after checking it names one of ``count`` devices.

    Raises ``TypeError`` for a non-integer and ``ValueError`` for an index outside ``[0, count)``.
    """
    if isinstance(device_index, bool) or not isinstance(device_index, int):
        raise TypeError(f"{name} device index must be an int or None, got {type(device_index).__name__}")
    if device_index < 0 or device_index >= count:
        valid = f"0..{count - 1}" if count else "none: no device is visible"
        raise ValueError(f"{name} device index {device_index} is out of range (valid: {valid})")
    return device_index


def native_pins():
    """DeepSpeed's native pinning manager (``accelops.utils.pin_memory``) while ``DS_PIN_MEMORY_BACKEND`` selects
    it, else None (imports nothing while the variable is unset). The accelerator's one reach up to the engine
    layer, as DeepSpeed's accelerator does (allowed in tests/packaging/test_import_graph.py)."""
    if not os.environ.get("DS_PIN_MEMORY_BACKEND", "").strip():
        return None
    from accelops.utils.pin_memory import get_active_native_pinned_memory

    return get_active_native_pinned_memory()


class TorchDeviceAccelerator(Accelerator):
    """Backend for any device type that torch exposes as ``torch.<name>`` (a device module)."""

    #: Vendor package that registers ``torch.<name>``; imported on first use, never at import.
    vendor_module: Optional[str] = None
    #: Environment variable(s) that restrict the visible devices.
    visible_devices_env_names: List[str] = []
    #: Prefixes of environment variables a launcher forwards.
    export_env_prefixes: List[str] = []
    #: ``torch.distributed`` backend name.
    comm_backend: str = "gloo"
    #: False where the device reads ordinary host memory (CPU, unified memory): nothing to page-lock.
    pins_host_memory: bool = True

    def __init__(self) -> None:
        self._compile_backend = "inductor"

    # ------------------------------------------------------------------ module access
    @functools.cached_property
    def _torch(self):
        import torch

        return torch

    @functools.cached_property
    def _module(self):
        """``torch.<name>``, after importing the vendor package that registers it if needed."""
        if self.vendor_module:
            import importlib

            importlib.import_module(self.vendor_module)
        return self._torch.get_device_module(self.name)

    @property
    def _device(self):
        """``torch.<name>`` for a call that needs a device of this backend; a clear ``RuntimeError`` where there
        is none (``DS_ACCELERATOR=cuda`` on a build host serves the op builders and names only)."""
        if not self.__dict__.get("_seen_available"):
            if not self.is_available():
                raise RuntimeError(
                    f"accelops: the {self.name} accelerator has no usable device here (torch "
                    f"{self._torch.__version__}, {self.device_count()} {self.name} devices). Chosen without a device "
                    f"(DS_ACCELERATOR={self.name} on a build host), it serves only the op builders "
                    f"(get_op_builder, create_op_builder) and names (name, communication_backend_name, "
                    f"visible_devices_envs); unset DS_ACCELERATOR or run on a {self.name} machine for device calls")
            self.__dict__["_seen_available"] = True
        return self._module

    def _require_device(self) -> None:
        """Raise ``_device``'s clear ``RuntimeError`` when this backend has no usable device."""
        self._device  # noqa: B018 - the property does the check

    def _index(self, device_index: Optional[int]) -> int:
        if device_index is None:
            return self.current_device()
        return check_device_index(device_index, self.device_count(), self.name)

    # ------------------------------------------------------------------ device semantics
    def is_synchronized_device(self) -> bool:
        return False

    def use_host_timers(self) -> bool:
        return self.is_synchronized_device()

    def resolves_data_dependency(self) -> bool:
        return self.is_synchronized_device()

    def handles_memory_backpressure(self) -> bool:
        return self.is_synchronized_device()

    # ------------------------------------------------------------------ devices
    def device_name(self, device_index: Optional[int] = None) -> str:
        if device_index is None:  # a name: also served without a device (cross-compiling)
            return self.name
        return f"{self.name}:{check_device_index(device_index, self.device_count(), self.name)}"

    def device(self, device_index: Optional[int] = None):
        return self._torch.device(self.name, self._index(device_index))

    def set_device(self, device_index: int) -> None:
        self._device.set_device(check_device_index(device_index, self.device_count(), self.name))

    def current_device(self) -> int:
        return int(self._device.current_device())

    def current_device_name(self) -> str:
        return f"{self.name}:{self.current_device()}"

    def device_count(self) -> int:
        try:
            return int(self._module.device_count())
        except (ImportError, RuntimeError, AttributeError):
            return 0

    def synchronize(self, device_index: Optional[int] = None) -> None:
        self._device.synchronize(None if device_index is None else self._index(device_index))

    def is_available(self) -> bool:
        try:
            return bool(self._module.is_available())
        except (ImportError, RuntimeError, AttributeError):
            return False

    # ------------------------------------------------------------------ RNG
    def random(self):
        return self._torch.random

    def set_rng_state(self, new_state, device_index: Optional[int] = None) -> None:
        self._device.set_rng_state(new_state, self._index(device_index))

    def get_rng_state(self, device_index: Optional[int] = None):
        return self._device.get_rng_state(self._index(device_index))

    def manual_seed(self, seed: int) -> None:
        self._module.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        self._module.manual_seed_all(seed)

    def initial_seed(self) -> int:
        return int(self._device.initial_seed())

    def default_generator(self, device_index: int):
        return self._device.default_generators[check_device_index(device_index, self.device_count(), self.name)]

    # ------------------------------------------------------------------ streams and events
    @property
    def Stream(self) -> type:
        return self._device.Stream

    def stream(self, stream) -> ContextManager:
        return self._device.stream(stream)

    def current_stream(self, device_index: Optional[int] = None):
        return self._device.current_stream(self._index(device_index))

    def default_stream(self, device_index: Optional[int] = None):
        return self._device.default_stream(self._index(device_index))

    @property
    def Event(self) -> type:
        return self._device.Event

    # ------------------------------------------------------------------ memory
    def empty_cache(self) -> None:
        self._device.empty_cache()

    def memory_allocated(self, device_index: Optional[int] = None) -> int:
        return int(self._device.memory_allocated(self._index(device_index)))

    def max_memory_allocated(self, device_index: Optional[int] = None) -> int:
        return int(self._device.max_memory_allocated(self._index(device_index)))

    def reset_peak_memory_stats(self, device_index: Optional[int] = None) -> None:
        self._device.reset_peak_memory_stats(self._index(device_index))

    # torch's deprecated names, kept by DeepSpeed: one meaning each, whatever the backend.
    def reset_max_memory_allocated(self, device_index: Optional[int] = None) -> None:
        self.reset_peak_memory_stats(device_index)

    def memory_cached(self, device_index: Optional[int] = None) -> int:
        return self.memory_reserved(device_index)

    def max_memory_cached(self, device_index: Optional[int] = None) -> int:
        return self.max_memory_reserved(device_index)

    def reset_max_memory_cached(self, device_index: Optional[int] = None) -> None:
        self.reset_peak_memory_stats(device_index)

    def memory_reserved(self, device_index: Optional[int] = None) -> int:
        return int(self._device.memory_reserved(self._index(device_index)))

    def max_memory_reserved(self, device_index: Optional[int] = None) -> int:
        return int(self._device.max_memory_reserved(self._index(device_index)))

    def memory_stats(self, device_index: Optional[int] = None) -> Dict[str, Any]:
        return dict(self._device.memory_stats(self._index(device_index)))

    def total_memory(self, device_index: Optional[int] = None) -> int:
        return int(self._device.get_device_properties(self._index(device_index)).total_memory)

    def available_memory(self, device_index: Optional[int] = None) -> int:
        free, _total = self._device.mem_get_info(self._index(device_index))
        return int(free)

    # ------------------------------------------------------------------ data types
    def is_bf16_supported(self) -> bool:
        try:
            return bool(self._module.is_bf16_supported())
        except (AttributeError, RuntimeError, AssertionError):
            return False

    def is_fp16_supported(self) -> bool:
        return self.is_available()

    def supported_dtypes(self) -> List[Any]:
        dtypes = [self._torch.float32]
        if self.is_bf16_supported():
            dtypes.append(self._torch.bfloat16)
        if self.is_fp16_supported():
            dtypes.append(self._torch.float16)
        return dtypes

    # ------------------------------------------------------------------ tensor types
    def _tensor_type(self, type_name: str) -> TensorType:
        dtype = getattr(self._torch, TENSOR_TYPES[type_name])
        return TensorType(type_name, dtype, self.name, ensure_device=self._require_device)

    @property
    def FloatTensor(self) -> TensorType:
        return self._tensor_type("FloatTensor")

    @property
    def DoubleTensor(self) -> TensorType:
        return self._tensor_type("DoubleTensor")

    @property
    def HalfTensor(self) -> TensorType:
        return self._tensor_type("HalfTensor")

    @property
    def BFloat16Tensor(self) -> TensorType:
        return self._tensor_type("BFloat16Tensor")

    @property
    def ByteTensor(self) -> TensorType:
        return self._tensor_type("ByteTensor")

    @property
    def IntTensor(self) -> TensorType:
        return self._tensor_type("IntTensor")

    @property
    def LongTensor(self) -> TensorType:
        return self._tensor_type("LongTensor")

    # ------------------------------------------------------------------ host memory
    def pin_memory(self, tensor, make_copy: bool = True, match_shape: bool = True):
        if not isinstance(tensor, self._torch.Tensor):
            raise TypeError(f"pin_memory() expects a torch.Tensor, got {type(tensor).__name__}")
        if tensor.device.type != "cpu":
            raise ValueError(f"pin_memory() takes a CPU tensor (host memory), got one on {tensor.device}")
        pins = native_pins()
        if pins is not None:
            return pins.pin(tensor, make_copy=make_copy, match_shape=match_shape)
        shape = tuple(tensor.shape) if match_shape else (tensor.numel(),)
        if not self.pins_host_memory:  # nothing to page-lock: the tensor itself, or a fresh buffer
            return tensor if make_copy else tensor.new_empty(shape)
        self._require_device()
        return tensor.pin_memory() if make_copy else tensor.new_empty(shape, pin_memory=True)

    def is_pinned(self, tensor) -> bool:
        pins = native_pins()
        if pins is not None and pins.is_pinned(tensor):
            return True
        return self._torch_is_pinned(tensor)

    def _torch_is_pinned(self, tensor) -> bool:
        """Whether torch pinned ``tensor`` for this device (backends override what differs)."""
        return bool(tensor.is_pinned())

    def unpin_memory(self, tensor):
        if not isinstance(tensor, self._torch.Tensor):
            raise TypeError(f"unpin_memory() expects a torch.Tensor, got {type(tensor).__name__}")
        pins = native_pins()
        return pins.unpin(tensor) if pins is not None else None

    def on_accelerator(self, tensor) -> bool:
        return tensor.device.type == self.name

    # ------------------------------------------------------------------ graphs
    def create_graph(self):
        raise NotImplementedError(f"{self.name} has no graph capture in accelops")

    def capture_to_graph(self, graph, pool=None, stream=None) -> ContextManager:
        raise NotImplementedError(f"{self.name} has no graph capture in accelops")

    def replay_graph(self, graph) -> None:
        raise NotImplementedError(f"{self.name} has no graph capture in accelops")

    # ------------------------------------------------------------------ profiling ranges
    def range_push(self, msg: str, domain: Optional[str] = None, category=None) -> None:
        _profiler_ranges.push(msg, domain)

    def range_pop(self, domain: Optional[str] = None) -> None:
        _profiler_ranges.pop(domain)

    # ------------------------------------------------------------------ deferred work
    def lazy_call(self, callback) -> None:
        """Queue ``callback`` with the device module's ``_lazy_call`` where it has one (CUDA, XPU, NPU),
        else run it now (the runtime needs no separate initialisation)."""
        if not callable(callback):
            raise TypeError(f"lazy_call() expects a callable, got {type(callback).__name__}")
        queue = getattr(self._device, "_lazy_call", None)
        if queue is None:
            callback()
        else:
            queue(callback)

    # ------------------------------------------------------------------ distributed
    def communication_backend_name(self) -> str:
        return self.comm_backend

    def visible_devices_envs(self) -> List[str]:
        return list(self.visible_devices_env_names)

    def set_visible_devices_envs(self, current_env: Dict[str, str], local_accelerator_ids: List[int]) -> None:
        ids = ",".join(str(int(i)) for i in local_accelerator_ids)
        for env in self.visible_devices_envs():
            current_env[env] = ids

    def export_envs(self) -> List[str]:
        return list(self.export_env_prefixes)

    # ------------------------------------------------------------------ compilers
    def is_triton_supported(self) -> bool:
        return False

    def get_compile_backend(self) -> str:
        return self._compile_backend

    def set_compile_backend(self, backend: str) -> None:
        from torch._dynamo import list_backends

        known = list_backends(exclude_tags=())
        if backend not in known:
            raise ValueError(f"unknown torch.compile backend {backend!r}; known: {', '.join(sorted(known))}")
        self._compile_backend = backend

    # ------------------------------------------------------------------ op builders
    def get_op_builder(self, class_name: str) -> type:
        from accelops.op_builder import get_builder_class

        return get_builder_class(class_name, accelerator_name=self.name)

    def create_op_builder(self, class_name: str):
        return self.get_op_builder(class_name)()

    def op_builder_dir(self) -> str:
        return "accelops.op_builder"

    def build_extension(self) -> type:
        from torch.utils.cpp_extension import BuildExtension

        return BuildExtension


class _ProfilerRanges:
    """Named ranges through ``torch.profiler.record_function``, for devices without NVTX-like APIs.

    One stack of open ranges per thread and per domain (``None`` is the default domain).
    """

    def __init__(self) -> None:
        import threading

        self._local = threading.local()

    def push(self, msg: str, domain: Optional[str] = None) -> None:
        from torch.profiler import record_function

        scope = record_function(str(msg))
        scope.__enter__()
        self._stack(domain).append(scope)

    def pop(self, domain: Optional[str] = None) -> None:
        stack = self._stack(domain)
        if not stack:
            where = "" if domain is None else f" in domain {domain!r}"
            raise RuntimeError(f"range_pop() called without a matching range_push(){where}")
        stack.pop().__exit__(None, None, None)

    def _stack(self, domain: Optional[str]) -> list:
        if not hasattr(self._local, "stacks"):
            self._local.stacks = {}
        return self._local.stacks.setdefault(domain, [])


_profiler_ranges = _ProfilerRanges()

