"""The accelerator contract: one set of methods with one meaning on every backend.

Method names follow DeepSpeed's ``DeepSpeedAccelerator`` so downstream code keeps working.
Conventions shared by every method:

* ``device_index`` is ``None`` (the current device) or an ``int`` in ``[0, device_count())``;
  anything else raises ``ValueError`` / ``TypeError`` naming the valid range.
* Methods that may initialise the device runtime (and so make a later ``os.fork()`` unsafe on
  CUDA-like devices) say so in their docstring: "Initialises the device."
* Return types are fixed: ints are ``int``, flags are ``bool``, devices are ``torch.device``.

This module imports nothing heavy; backends import torch and vendor packages lazily.
"""
from __future__ import annotations

import abc
from typing import Any, ContextManager, Dict, List, Optional, Tuple


class Accelerator(abc.ABC):
    """Abstract base of every accelerator backend.

    Subclasses set ``name`` (the device type, e.g. ``"cuda"``) and ``priority`` (higher is tried
    first during detection) and implement ``probe()`` plus every abstract method below.
    """

    #: Device type string, also the value ``DS_ACCELERATOR`` accepts for this backend.
    name: str = ""
    #: Detection order: candidates with a higher priority are probed first. CPU is 0.
    priority: int = 0
    #: True when ``range_push``/``range_pop`` honour ``domain`` (NVTX domains); DeepSpeed's
    #: profiling helpers only pass a domain when this is True.
    supports_nvtx_domain: bool = False

    # ------------------------------------------------------------------ detection
    @classmethod
    @abc.abstractmethod
    def probe(cls) -> Tuple[bool, str]:
        """Return ``(present, reason)``: whether a usable device of this type exists here.

        Must look for devices (device files, driver queries through torch), never merely for
        an importable vendor package. Must not raise; failures become ``(False, reason)``.
        """

    # ------------------------------------------------------------------ device semantics
    @abc.abstractmethod
    def is_synchronized_device(self) -> bool:
        """True when kernels run synchronously with the host (e.g. CPU), so no sync is needed."""

    @abc.abstractmethod
    def use_host_timers(self) -> bool:
        """True when wall-clock host timers measure device work correctly."""

    @abc.abstractmethod
    def resolves_data_dependency(self) -> bool:
        """True when the runtime orders dependent operations itself (no explicit stream sync)."""

    @abc.abstractmethod
    def handles_memory_backpressure(self) -> bool:
        """True when the runtime throttles allocations itself (no manual cache flushing needed)."""

    # ------------------------------------------------------------------ devices
    @abc.abstractmethod
    def device_name(self, device_index: Optional[int] = None) -> str:
        """Return ``'<name>'`` for ``None`` or ``'<name>:<i>'`` for an index, e.g. ``'cuda:1'``."""

    @abc.abstractmethod
    def device(self, device_index: Optional[int] = None) -> Any:
        """Return the ``torch.device`` for ``device_index`` (``None``: the current device)."""

    @abc.abstractmethod
    def set_device(self, device_index: int) -> None:
        """Make ``device_index`` the current device of this thread. Initialises the device."""

    @abc.abstractmethod
    def current_device(self) -> int:
        """Return the index of the current device as an ``int``. Initialises the device."""

    @abc.abstractmethod
    def current_device_name(self) -> str:
        """Return ``device_name(current_device())``, e.g. ``'cuda:0'``. Initialises the device."""

    @abc.abstractmethod
    def device_count(self) -> int:
        """Return the number of visible devices (0 when none). Does not initialise the device."""

    @abc.abstractmethod
    def synchronize(self, device_index: Optional[int] = None) -> None:
        """Block the host until all queued work on the device has finished."""

    @abc.abstractmethod
    def is_available(self) -> bool:
        """True when at least one device of this type can be used now."""

    # ------------------------------------------------------------------ RNG
    @abc.abstractmethod
    def random(self) -> Any:
        """Return the ``torch.random`` module (seeding helpers shared by all devices)."""

    @abc.abstractmethod
    def set_rng_state(self, new_state: Any, device_index: Optional[int] = None) -> None:
        """Restore the generator state of ``device_index`` from a ``torch.ByteTensor``."""

    @abc.abstractmethod
    def get_rng_state(self, device_index: Optional[int] = None) -> Any:
        """Return the generator state of ``device_index`` as a ``torch.ByteTensor``."""

    @abc.abstractmethod
    def manual_seed(self, seed: int) -> None:
        """Seed the generator of the current device."""

    @abc.abstractmethod
    def manual_seed_all(self, seed: int) -> None:
        """Seed the generators of all devices of this type."""

    @abc.abstractmethod
    def initial_seed(self) -> int:
        """Return the initial seed of the current device's generator as an ``int``."""

    @abc.abstractmethod
    def default_generator(self, device_index: int) -> Any:
        """Return the default ``torch.Generator`` of ``device_index``."""

    # ------------------------------------------------------------------ streams and events
    @property
    @abc.abstractmethod
    def Stream(self) -> type:
        """The stream class of this device (``torch.cuda.Stream`` on CUDA)."""

    @abc.abstractmethod
    def stream(self, stream: Any) -> ContextManager:
        """Return a context manager that makes ``stream`` current inside it."""

    @abc.abstractmethod
    def current_stream(self, device_index: Optional[int] = None) -> Any:
        """Return the stream work is currently queued on for ``device_index``."""

    @abc.abstractmethod
    def default_stream(self, device_index: Optional[int] = None) -> Any:
        """Return the default stream of ``device_index``."""

    @property
    @abc.abstractmethod
    def Event(self) -> type:
        """The event class of this device (``record()``, ``synchronize()``, ``elapsed_time()``)."""

    # ------------------------------------------------------------------ memory
    @abc.abstractmethod
    def empty_cache(self) -> None:
        """Release cached, unused memory held by the allocator back to the device."""

    @abc.abstractmethod
    def memory_allocated(self, device_index: Optional[int] = None) -> int:
        """Bytes currently occupied by tensors (on CPU: the process's resident set)."""

    @abc.abstractmethod
    def max_memory_allocated(self, device_index: Optional[int] = None) -> int:
        """Peak of ``memory_allocated`` since start or the last ``reset_peak_memory_stats``."""

    @abc.abstractmethod
    def reset_peak_memory_stats(self, device_index: Optional[int] = None) -> None:
        """Restart the peak counters behind ``max_memory_allocated``/``max_memory_reserved``."""

    @abc.abstractmethod
    def reset_max_memory_allocated(self, device_index: Optional[int] = None) -> None:
        """Restart the peak behind ``max_memory_allocated`` (torch's old name; resets every peak counter,
        as ``reset_peak_memory_stats`` does)."""

    @abc.abstractmethod
    def memory_reserved(self, device_index: Optional[int] = None) -> int:
        """Bytes held by the allocator, including cached blocks."""

    @abc.abstractmethod
    def max_memory_reserved(self, device_index: Optional[int] = None) -> int:
        """Peak of ``memory_reserved`` since start or the last reset."""

    @abc.abstractmethod
    def memory_cached(self, device_index: Optional[int] = None) -> int:
        """torch's old name for ``memory_reserved``: same value, an ``int`` of bytes."""

    @abc.abstractmethod
    def max_memory_cached(self, device_index: Optional[int] = None) -> int:
        """torch's old name for ``max_memory_reserved``: same value, an ``int`` of bytes."""

    @abc.abstractmethod
    def reset_max_memory_cached(self, device_index: Optional[int] = None) -> None:
        """Restart the peak behind ``max_memory_cached`` (resets every peak counter, as
        ``reset_peak_memory_stats`` does)."""

    @abc.abstractmethod
    def memory_stats(self, device_index: Optional[int] = None) -> Dict[str, Any]:
        """Return a dict of allocator statistics (keys are backend-specific)."""

    @abc.abstractmethod
    def total_memory(self, device_index: Optional[int] = None) -> int:
        """Total bytes of memory of the device."""

    @abc.abstractmethod
    def available_memory(self, device_index: Optional[int] = None) -> int:
        """Bytes that can still be allocated on the device now."""

    # ------------------------------------------------------------------ data types
    @abc.abstractmethod
    def is_bf16_supported(self) -> bool:
        """True when the device computes in bfloat16."""

    @abc.abstractmethod
    def is_fp16_supported(self) -> bool:
        """True when the device computes in float16."""

    @abc.abstractmethod
    def supported_dtypes(self) -> List[Any]:
        """Return the floating ``torch.dtype`` values usable for training, fp32 first."""

    # ------------------------------------------------------------------ tensor types
    # Each is a callable (``accelerator.tensor_types.TensorType``) that makes tensors of its dtype on
    # this device type, called like ``torch.FloatTensor``: ``FloatTensor([1.0, 2.0])`` copies data,
    # ``FloatTensor(2, 3)`` is an uninitialised 2x3 tensor. Calling one needs a device.
    @property
    @abc.abstractmethod
    def FloatTensor(self) -> Any:
        """Constructor of ``torch.float32`` tensors on this device."""

    @property
    @abc.abstractmethod
    def DoubleTensor(self) -> Any:
        """Constructor of ``torch.float64`` tensors on this device."""

    @property
    @abc.abstractmethod
    def HalfTensor(self) -> Any:
        """Constructor of ``torch.float16`` tensors on this device."""

    @property
    @abc.abstractmethod
    def BFloat16Tensor(self) -> Any:
        """Constructor of ``torch.bfloat16`` tensors on this device."""

    @property
    @abc.abstractmethod
    def ByteTensor(self) -> Any:
        """Constructor of ``torch.uint8`` tensors on this device."""

    @property
    @abc.abstractmethod
    def IntTensor(self) -> Any:
        """Constructor of ``torch.int32`` tensors on this device."""

    @property
    @abc.abstractmethod
    def LongTensor(self) -> Any:
        """Constructor of ``torch.int64`` tensors on this device."""

    # ------------------------------------------------------------------ host memory
    @abc.abstractmethod
    def pin_memory(self, tensor: Any, make_copy: bool = True, match_shape: bool = True) -> Any:
        """Return page-locked host memory for the CPU ``tensor``.

        ``make_copy=True``: a page-locked copy of ``tensor`` (on devices that read host memory
        directly, CPU and MPS, the tensor itself). ``make_copy=False``: ``tensor`` is only a template
        and a new buffer of its dtype with undefined contents is returned, shaped like ``tensor``
        (``match_shape=True``) or flat with ``tensor.numel()`` elements (``match_shape=False``).
        With ``DS_PIN_MEMORY_BACKEND=native`` (DeepSpeed's switch, read at each call) every backend, the CPU
        included, returns an mlock'ed copy or buffer from ``accelops.utils.pin_memory`` (``RuntimeError`` when
        the pin_memory op cannot be loaded or the pages cannot be locked).
        Raises ``TypeError`` for a non-tensor and ``ValueError`` for a tensor not on the CPU.
        """

    @abc.abstractmethod
    def is_pinned(self, tensor: Any) -> bool:
        """True when ``tensor`` lives in page-locked host memory usable by this device (with
        ``DS_PIN_MEMORY_BACKEND=native`` also inside memory that backend locked: views and slices too)."""

    def unpin_memory(self, tensor: Any) -> Optional[bool]:
        """Release page-locking that a backend's own pinning pool applied to ``tensor``.

        torch's allocator unpins when the tensor is freed, so by default this returns ``None`` and changes
        nothing. With ``DS_PIN_MEMORY_BACKEND=native`` the generic backend unlocks the native allocation
        ``tensor`` was pinned in and returns True (False when it holds none). Raises ``TypeError`` for a
        non-tensor.
        """
        import torch

        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"unpin_memory() expects a torch.Tensor, got {type(tensor).__name__}")
        return None

    @abc.abstractmethod
    def on_accelerator(self, tensor: Any) -> bool:
        """True when ``tensor`` is stored on a device of this type."""

    # ------------------------------------------------------------------ graphs
    @abc.abstractmethod
    def create_graph(self) -> Any:
        """Return a new, empty capture graph. Raises ``NotImplementedError`` where unsupported."""

    @abc.abstractmethod
    def capture_to_graph(self, graph: Any, pool: Any = None, stream: Any = None) -> ContextManager:
        """Return a context manager that records the work inside it into ``graph``."""

    @abc.abstractmethod
    def replay_graph(self, graph: Any) -> None:
        """Launch the work recorded in ``graph`` again."""

    # ------------------------------------------------------------------ profiling ranges
    @abc.abstractmethod
    def range_push(self, msg: str, domain: Optional[str] = None, category: Any = None) -> None:
        """Open a range named ``msg`` visible in profiler timelines (NVTX on CUDA).

        ``domain`` groups ranges (an NVTX domain where ``supports_nvtx_domain``; elsewhere a separate
        stack of ranges); ``category`` is an NVTX category, ignored where there is none.
        """

    @abc.abstractmethod
    def range_pop(self, domain: Optional[str] = None) -> None:
        """Close the innermost range opened by ``range_push`` with the same ``domain``."""

    # ------------------------------------------------------------------ deferred work
    @abc.abstractmethod
    def lazy_call(self, callback: Any) -> None:
        """Run ``callback()`` once the device runtime is initialised: now if it already is (or the device
        needs no initialisation), else when it initialises. Does not initialise the device itself.

        Returns ``None``. Raises ``TypeError`` when ``callback`` is not callable.
        """

    # ------------------------------------------------------------------ distributed
    @abc.abstractmethod
    def communication_backend_name(self) -> str:
        """Return the ``torch.distributed`` backend for this device, e.g. ``'nccl'``."""

    @abc.abstractmethod
    def visible_devices_envs(self) -> List[str]:
        """Return the environment variables that restrict which devices a process sees."""

    @abc.abstractmethod
    def set_visible_devices_envs(self, current_env: Dict[str, str], local_accelerator_ids: List[int]) -> None:
        """Write ``local_accelerator_ids`` into every variable of ``visible_devices_envs`` in ``current_env``."""

    @abc.abstractmethod
    def export_envs(self) -> List[str]:
        """Return prefixes of environment variables a launcher must forward to workers."""

    # ------------------------------------------------------------------ compilers
    @abc.abstractmethod
    def is_triton_supported(self) -> bool:
        """True when Triton kernels can run on this device."""

    def prefer_triton_grouped_mm(self) -> bool:
        """True when a Triton grouped GEMM beats ``torch._grouped_mm`` here (MoE expert layers).

        False unless a backend knows better (CUDA sm7x/sm8x with Triton installed).
        """
        return False

    @abc.abstractmethod
    def get_compile_backend(self) -> str:
        """Return the ``torch.compile`` backend name used for this device."""

    @abc.abstractmethod
    def set_compile_backend(self, backend: str) -> None:
        """Choose the ``torch.compile`` backend; raises ``ValueError`` for an unknown name."""

    # ------------------------------------------------------------------ op builders
    @abc.abstractmethod
    def get_op_builder(self, class_name: str) -> type:
        """Return the op builder class called ``class_name`` for this device.

        Raises ``ValueError`` listing the known builders when the name is unknown.
        """

    @abc.abstractmethod
    def create_op_builder(self, class_name: str) -> Any:
        """Return a new instance of ``get_op_builder(class_name)``."""

    @abc.abstractmethod
    def op_builder_dir(self) -> str:
        """Return the dotted module path holding the op builders (``'accelops.op_builder'``).

        ``getattr(importlib.import_module(op_builder_dir()), "CPUAdamBuilder")`` is a builder class.
        """

    @abc.abstractmethod
    def build_extension(self) -> type:
        """Return the setuptools ``build_ext`` command class for ops (torch's ``BuildExtension``)."""

    # ------------------------------------------------------------------ shared helpers
    def __repr__(self) -> str:
        return f"<accelops accelerator {self.name!r}>"


#: The name DeepSpeed users import.
DeepSpeedAccelerator = Accelerator
