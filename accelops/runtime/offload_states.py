"""``engine.offload_states()`` / ``reload_states()``: free the memory of the engine's states between uses
(DeepSpeed's API, used by RLHF loops that alternate a trained model and a generating one on one device).

What each of DeepSpeed's state types is in accelops (:class:`OffloadStateTypeEnum`):

* ``optim_states``: every tensor of the optimizer's state (Adam's ``exp_avg``/``exp_avg_sq``, ...);
* ``hp_params``: the parameters, which are accelops' fp32 master weights (with ZeRO 1-3 the local shards);
* ``lp_grads``: the parameters' gradients (accelops keeps them in fp32; there are none between a step and
  the next backward);
* ``lp_params`` and ``contiguous_grad_buffer``: accelops keeps no low-precision copy of the parameters and
  no flat gradient buffer, so there is nothing to move for them.

How: for each distinct storage among those tensors, its bytes are copied to a CPU buffer (pinned when
asked and a CUDA runtime is there) and the storage is resized to zero bytes, which frees its memory
while every tensor, view and parameter object stays the same (FSDP2, DDP and the optimizer keep working
references). ``reload`` resizes each storage back and copies the bytes in: the round trip is bit-exact.
Between the two, the engine refuses to train (RuntimeError), since the tensors have no data.

DeepSpeed facts: ``device`` is ``OffloadDeviceEnum.cpu`` (``none`` warns and does nothing, ``nvme`` is a
ValueError); ``include=None`` means every type; offloading a type already offloaded does nothing; it is
refused when ``offload_param`` is configured and without an optimizer. Unlike DeepSpeed (ZeRO-3 with its
FusedAdam only), any stage and any optimizer work; ``non_blocking`` is accepted, but each copy completes
before the memory it came from is freed.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Set

import torch

from .._logging import get_logger
from .zero.offload_config import OffloadDeviceEnum, OffloadStateTypeEnum

logger = get_logger(__name__)
NOTHING_TO_MOVE = (OffloadStateTypeEnum.lp_params, OffloadStateTypeEnum.contiguous_grad_buffer)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _bytes_of(storage: torch.UntypedStorage) -> torch.Tensor:
    """A uint8 tensor over the whole of ``storage``."""
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


class _Offloaded:
    """One storage's bytes held in CPU memory while the storage itself is empty."""

    def __init__(self, storage: torch.UntypedStorage, pin: bool, non_blocking: bool) -> None:
        self.storage = storage
        self.nbytes = storage.nbytes()
        self.copy = torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=pin)
        self.copy.copy_(_bytes_of(storage), non_blocking=non_blocking)
        if non_blocking and storage.device.type != "cpu":
            from accelops.accelerator import get_accelerator

            get_accelerator().synchronize()  # the copy must be done before its source is freed
        storage.resize_(0)

    def restore(self, non_blocking: bool) -> None:
        self.storage.resize_(self.nbytes)
        _bytes_of(self.storage).copy_(self.copy, non_blocking=non_blocking)


def parse_include(include: Optional[Iterable[Any]]) -> List[OffloadStateTypeEnum]:
    """``include`` as enum members (None: all). ValueError naming the valid names for anything else."""
    if include is None:
        return list(OffloadStateTypeEnum)
    names = [member.value for member in OffloadStateTypeEnum]
    if isinstance(include, (str, OffloadStateTypeEnum)):
        include = [include]
    chosen = []
    for item in include:
        value = getattr(item, "value", item)
        if value not in names:
            raise ValueError(f"offload_states(include=...): {item!r} is not a state type; expected some of {names}")
        chosen.append(OffloadStateTypeEnum(value))
    return chosen


def parse_device(device: Any) -> Optional[OffloadDeviceEnum]:
    """``device`` as an enum member; None for ``none`` (after a warning, as DeepSpeed). ValueError for
    ``nvme`` or anything else."""
    value = getattr(device, "value", device)
    if value == OffloadDeviceEnum.none.value:
        logger.warning("offload_states(device='none'): no device to offload to, nothing is moved")
        return None
    if value == OffloadDeviceEnum.nvme.value:
        raise ValueError("offload_states(device='nvme'): NVMe offload is not supported for offloading states; "
                         "use OffloadDeviceEnum.cpu")
    if value != OffloadDeviceEnum.cpu.value:
        raise ValueError(f"offload_states(device={device!r}): expected OffloadDeviceEnum.cpu ('cpu')")
    return OffloadDeviceEnum.cpu


class StateOffloader:
    """The offloaded storages of one engine, by state type."""

    def __init__(self) -> None:
        self._held: Dict[OffloadStateTypeEnum, List[_Offloaded]] = {}

    @property
    def offloaded(self) -> Set[OffloadStateTypeEnum]:
        return set(self._held)

    def offload(self, tensors_of: Dict[OffloadStateTypeEnum, Sequence[torch.Tensor]],
                include: List[OffloadStateTypeEnum], pin: bool, non_blocking: bool) -> None:
        """Offload the tensors of each type in ``include`` not yet offloaded (module docstring)."""
        seen = set()  # storages shared by several tensors (views, kernel optimizers' local shards) move once
        for kind in include:
            if kind in self._held:
                continue
            moved = []
            for tensor in tensors_of.get(kind, ()):
                storage = _plain(tensor).untyped_storage()
                key = storage.data_ptr()
                if storage.nbytes() == 0 or key in seen:
                    continue
                seen.add(key)
                moved.append(_Offloaded(storage, pin, non_blocking))
            self._held[kind] = moved

    def reload(self, non_blocking: bool) -> None:
        """Bring every offloaded storage back (bit-exact) and drop the CPU copies."""
        for held in self._held.values():
            for item in held:
                item.restore(non_blocking)
        self._held.clear()
