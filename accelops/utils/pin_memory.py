"""DeepSpeed's ``deepspeed.utils.pin_memory``: pinning host tensors with the pin_memory op (mlock'ed pages).

``DS_PIN_MEMORY_BACKEND`` picks how ``get_accelerator().pin_memory/is_pinned/unpin_memory`` pin, read at each
call: ``torch`` (the default; the accelerator's own pinning) or ``native`` (the process-wide
:class:`NativePinnedMemory` below); any other value is a ``ValueError`` naming both. The native manager needs
the ``pin_memory`` op (``accelops.op_builder.PinMemoryBuilder``, built on first use): when it cannot be loaded,
making the manager raises ``RuntimeError`` at once instead of falling back to torch.

Lifetime: a pinned tensor's pages stay locked until ``unpin()`` or until the last tensor using them (the
returned tensor, its views and slices) dies; the memory itself is released only then, so ``unpin()`` never
leaves a live view pointing at freed memory.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

__all__ = ["BACKEND_ENV", "NativePinnedMemory", "get_active_native_pinned_memory", "get_native_pinned_memory"]

#: The variable that selects the pinning backend (DeepSpeed's name).
BACKEND_ENV = "DS_PIN_MEMORY_BACKEND"
BACKENDS = ("torch", "native")

#: The process-wide manager (DeepSpeed's name), made on first use: every pin and query goes through it.
_shared_native_pins: Optional["NativePinnedMemory"] = None


class NativePinnedMemory:
    """Pins CPU tensors into page-locked memory of the pin_memory op and answers which tensors are pinned.

    ``RuntimeError`` (naming the op and the cause) when the op cannot be built or loaded."""

    def __init__(self) -> None:
        try:
            from accelops.op_builder import PinMemoryBuilder  # looked up at each call (tests replace it)

            self._handle = PinMemoryBuilder().load().pin_handle()
        except Exception as exc:
            raise RuntimeError(f"{BACKEND_ENV}=native needs the pin_memory op, which could not be built or loaded: "
                               f"{exc}") from exc

    @property
    def _ranges(self) -> Dict[int, int]:
        """Start -> end address of every allocation still locked (DeepSpeed's attribute, read from the op)."""
        return self._handle.locked_ranges()

    def pin(self, tensor, make_copy: bool = True, match_shape: bool = True):
        """A page-locked tensor of ``tensor``'s dtype: a copy of ``tensor`` (``make_copy=True``) or zeros, shaped
        like it (``match_shape=True``) or flat with ``tensor.numel()`` elements. The result has
        ``ds_pinned = True`` and ``ds_pin_base`` (its allocation's address, which ``unpin`` frees even after
        ``.data`` is rebound). ``TypeError`` for a non-tensor; ``RuntimeError`` when the pages cannot be locked
        (it names ``RLIMIT_MEMLOCK`` and the size)."""
        import torch

        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"pin() expects a torch.Tensor, got {type(tensor).__name__}")
        flat = self._handle.new_cpu_locked_tensor(tensor.numel(), tensor)
        if make_copy:
            flat.copy_(tensor.reshape(-1))
        pinned = flat.view(tensor.shape) if match_shape else flat
        pinned.ds_pinned = True
        pinned.ds_pin_base = flat.data_ptr()
        return pinned

    def is_pinned(self, tensor) -> bool:
        """True for a tensor ``pin`` returned and not unpinned, or any view or slice inside a locked allocation
        (or pinned by torch); False for tensors without storage (meta, fake)."""
        if getattr(tensor, "ds_pinned", False):
            return True
        return self._handle.is_pinned(tensor)

    def unpin(self, tensor) -> bool:
        """Unlock the allocation ``tensor`` was pinned in (``ds_pin_base``, else its data pointer): True, or False
        when nothing locked starts there. Sets ``ds_pinned`` to False. The memory stays valid while tensors use
        it, and is released when the last one dies."""
        begin = getattr(tensor, "ds_pin_base", None)
        freed = (self._handle.free_cpu_locked_tensor(tensor) if begin is None
                 else self._handle.free_cpu_locked_tensor_by_ptr(begin))
        if hasattr(tensor, "ds_pinned"):
            tensor.ds_pinned = False
        return freed


def get_native_pinned_memory() -> NativePinnedMemory:
    """The process-wide manager, made (and the op loaded) on first call."""
    global _shared_native_pins
    if _shared_native_pins is None:
        _shared_native_pins = NativePinnedMemory()
    return _shared_native_pins


def get_active_native_pinned_memory() -> Optional[NativePinnedMemory]:
    """The manager while ``DS_PIN_MEMORY_BACKEND=native``, None for ``torch`` (or unset); ``ValueError`` for any
    other value, ``RuntimeError`` when native is chosen and the op cannot be loaded."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower() or "torch"
    if value not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={os.environ[BACKEND_ENV]!r}: expected one of {', '.join(BACKENDS)}")
    return get_native_pinned_memory() if value == "native" else None
