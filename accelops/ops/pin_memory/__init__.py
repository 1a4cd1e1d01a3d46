"""DeepSpeed's ``deepspeed.ops.pin_memory``: the page-locked host memory op's builder, ``PinMemoryBuilder``.

``PinMemoryBuilder().load().pin_handle()`` allocates page-locked (mlock'ed) CPU tensors (``handle.py``); the
manager that pins tensors for the accelerator is ``accelops.utils.pin_memory``. Importing this package builds
nothing and imports no torch.
"""
from .build import PinMemoryBuilder

__all__ = ["PinMemoryBuilder"]
