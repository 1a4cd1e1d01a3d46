"""DeepSpeed's ``deepspeed.runtime.utils`` helpers that training scripts call: ``set_random_seed`` and
``see_memory_usage``.

DeepSpeed facts (deepspeed/runtime/utils.py): ``set_random_seed(seed)`` seeds Python's ``random``, NumPy
(``seed % 2**32``) and torch (``torch.manual_seed(seed % 2**63)``, which seeds every device too);
``see_memory_usage(message, force=False)`` does nothing unless ``force``, and otherwise prints on rank 0
only (every process when ``torch.distributed`` is not initialised): the message, the accelerator's
allocated / peak allocated / reserved / peak reserved memory in GB, the host's used virtual memory, then
resets the accelerator's peak statistics. Here NumPy is seeded when it is installed (DeepSpeed requires
it), and the host line comes from :mod:`accelops.accelerator.host_memory` (DeepSpeed uses psutil).
"""
from __future__ import annotations

import gc
import random

__all__ = ["see_memory_usage", "set_random_seed"]

_GB = 1024 ** 3


def set_random_seed(seed: int) -> None:
    """Seed ``random``, NumPy (when installed) and torch (all devices) from ``seed``, as DeepSpeed does.
    TypeError when ``seed`` is not an integer."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"set_random_seed(seed) takes an integer, got {seed!r}")
    import torch

    random.seed(seed)
    try:
        import numpy
    except ImportError:
        pass
    else:
        numpy.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed % 2 ** 63)


def see_memory_usage(message: str, force: bool = False) -> None:
    """With ``force``, print ``message`` and the memory in use (module docstring) on rank 0, then reset the
    accelerator's peak memory statistics; without it, do nothing (DeepSpeed's default)."""
    if not force:
        return
    from accelops.accelerator import get_accelerator, host_memory
    from accelops.comm import get_rank

    if get_rank() != 0:
        return
    gc.collect()  # so that memory freed by cycles is not counted
    acc = get_accelerator()
    print(message)
    print(f"MA {acc.memory_allocated() / _GB:.2f} GB         Max_MA {acc.max_memory_allocated() / _GB:.2f} GB         "
          f"CA {acc.memory_reserved() / _GB:.2f} GB         Max_CA {acc.max_memory_reserved() / _GB:.2f} GB ")
    total, available = host_memory.host_total_bytes(), host_memory.host_available_bytes()
    if total:
        print(f"CPU Virtual Memory:  used = {(total - available) / _GB:.2f} GB, "
              f"percent = {100.0 * (total - available) / total:.1f}%")
    acc.reset_peak_memory_stats()
