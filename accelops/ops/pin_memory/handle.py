"""DeepSpeed's pin_memory module shape over the op's library: ``module.pin_handle()`` and the handle's methods.

The handle allocates flat CPU tensors in page-locked memory (mmap + mlock, whole pages). The memory is
munlocked and unmapped when the last tensor using it dies; ``free_cpu_locked_tensor*`` ends the locking at
once but leaves the memory valid for tensors still using it (DeepSpeed frees it there, a use-after-free).
The allocations of every handle in a process are one registry, kept by the library.
"""
from __future__ import annotations

from typing import Any, Dict

__all__ = ["PinHandle", "PinMemoryModule"]


class PinMemoryModule:
    """What ``PinMemoryBuilder().load()`` returns: ``pin_handle()`` makes a :class:`PinHandle`; the library's
    operators (``alloc_locked``, ``unlock``, ``is_locked``, ``locked_ranges``) are attributes; ``__file__`` is
    the library's path."""

    def __init__(self, library) -> None:
        self.library = library
        self.__file__ = library.__file__

    def pin_handle(self) -> "PinHandle":
        """A new handle (DeepSpeed constructs its ``pin_handle`` class the same way)."""
        return PinHandle(self.library)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.library, name)


class PinHandle:
    """DeepSpeed's ``pin_handle``: allocate, free and recognise page-locked CPU tensors."""

    def __init__(self, library) -> None:
        self._library = library

    def new_cpu_locked_tensor(self, num_elem: int, example_tensor) -> Any:
        """A flat page-locked CPU tensor of ``num_elem`` elements of ``example_tensor``'s dtype, contents zero
        (for ``num_elem=0`` an ordinary empty tensor: there is no memory to lock).

        ``TypeError`` for a non-int count or a non-tensor example, ``ValueError`` for a negative count;
        ``RuntimeError`` when the pages cannot be locked (it names ``RLIMIT_MEMLOCK``, its value and the size)."""
        import torch

        if isinstance(num_elem, bool) or not isinstance(num_elem, int):
            raise TypeError(f"new_cpu_locked_tensor: num_elem must be an int, got {type(num_elem).__name__}")
        if num_elem < 0:
            raise ValueError(f"new_cpu_locked_tensor: num_elem must be >= 0, got {num_elem}")
        if not isinstance(example_tensor, torch.Tensor):
            raise TypeError(f"new_cpu_locked_tensor: example_tensor must be a torch.Tensor (its dtype is used), got "
                            f"{type(example_tensor).__name__}")
        like = torch.empty(0, dtype=example_tensor.dtype)  # only the dtype matters; any device or fake tensor will do
        if num_elem == 0:
            return like
        return self._library.alloc_locked(num_elem, like)

    def free_cpu_locked_tensor(self, locked_tensor) -> bool:
        """Unlock the allocation ``locked_tensor`` starts at: True, or False when none starts there (already
        freed, or not from this op). The memory itself is released when its last tensor dies."""
        return self.free_cpu_locked_tensor_by_ptr(_data_ptr("free_cpu_locked_tensor", locked_tensor))

    def free_cpu_locked_tensor_by_ptr(self, address: int) -> bool:
        """As ``free_cpu_locked_tensor``, by the allocation's start address (``tensor.data_ptr()`` at pin time)."""
        if isinstance(address, bool) or not isinstance(address, int):
            raise TypeError(f"free_cpu_locked_tensor_by_ptr: address must be an int, got {type(address).__name__}")
        return bool(self._library.unlock(address))

    def locked_ranges(self) -> Dict[int, int]:
        """Start address -> end address (exclusive) of every allocation of this op still locked, in the process
        (accelops' addition)."""
        flat = list(self._library.locked_ranges())
        return dict(zip(flat[0::2], flat[1::2]))

    def is_pinned(self, buffer) -> bool:
        """True when ``buffer`` is pinned by torch or lies wholly inside one locked allocation of this op (views
        and slices of a locked tensor included). False for tensors without storage (meta, fake)."""
        _data_ptr("is_pinned", buffer)
        if not has_real_storage(buffer):
            return False
        try:
            if buffer.is_pinned():
                return True
        except RuntimeError:  # a CPU-only torch cannot say
            pass
        return buffer.device.type == "cpu" and bool(self._library.is_locked(buffer))


def has_real_storage(tensor) -> bool:
    """False for meta and fake tensors (no memory to look at)."""
    if tensor.device.type == "meta":
        return False
    try:
        from torch._subclasses.fake_tensor import is_fake
    except ImportError:  # a torch without fake tensors
        return True
    return not is_fake(tensor)


def _data_ptr(who: str, tensor) -> int:
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor, got {type(tensor).__name__}")
    return tensor.data_ptr() if has_real_storage(tensor) else 0
