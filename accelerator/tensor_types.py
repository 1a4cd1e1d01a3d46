"""DeepSpeed's tensor-type constructors (``get_accelerator().FloatTensor([1.0])`` and friends).

A :class:`TensorType` is bound to one dtype and one device type and is called like torch's legacy
typed constructors (``torch.FloatTensor``): ints are a shape, one other argument is data. Torch is
imported only when a constructor is called, never when this module is imported.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

#: DeepSpeed's property name -> name of the ``torch`` dtype it makes.
TENSOR_TYPES = {
    "FloatTensor": "float32",
    "DoubleTensor": "float64",
    "HalfTensor": "float16",
    "BFloat16Tensor": "bfloat16",
    "ByteTensor": "uint8",
    "IntTensor": "int32",
    "LongTensor": "int64",
}


def _is_size(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class TensorType:
    """Makes tensors of ``dtype`` on device type ``device`` (``'cuda'`` means the current CUDA device).

    Call shapes, as with ``torch.FloatTensor``/``torch.cuda.FloatTensor``:

    * ``T()``: an empty tensor (shape ``(0,)``);
    * ``T(3)``, ``T(2, 3)``, ``T(torch.Size([2, 3]))``: an uninitialised tensor of that shape;
    * ``T([1, 2])``, ``T((1, 2))``, ``T(2.5)``, ``T(tensor)``, ``T(ndarray)``: a new tensor holding a
      copy of the data (a lone float or bool makes a 0-d tensor).

    ``requires_grad`` is the only keyword. ``isinstance(t, T)`` is True for a tensor of this dtype on
    this device type. Bad arguments raise ``TypeError``; negative sizes raise ``ValueError``.
    """

    def __init__(self, type_name: str, dtype: Any, device: str,
                 ensure_device: Optional[Callable[[], Any]] = None) -> None:
        self.type_name = type_name
        self.dtype = dtype
        self.device = device
        self._ensure_device = ensure_device

    def __call__(self, *args: Any, requires_grad: bool = False):
        import torch

        if self._ensure_device is not None:
            self._ensure_device()  # the backend's clear error when it has no device
        if not args:
            return torch.empty(0, dtype=self.dtype, device=self.device, requires_grad=requires_grad)
        if len(args) == 1 and isinstance(args[0], torch.Size):
            args = tuple(args[0])
        if all(_is_size(arg) for arg in args):
            shape = tuple(int(arg) for arg in args)
            if any(size < 0 for size in shape):
                raise ValueError(f"{self.type_name}: sizes must be non-negative, got {shape}")
            return torch.empty(shape, dtype=self.dtype, device=self.device, requires_grad=requires_grad)
        if len(args) > 1:
            kinds = ", ".join(type(arg).__name__ for arg in args)
            raise TypeError(f"{self.type_name} takes int sizes, e.g. {self.type_name}(2, 3), or one data "
                            f"argument, e.g. {self.type_name}([1, 2]); got ({kinds})")
        data = args[0]
        if isinstance(data, torch.Tensor):
            made = data.detach().to(device=self.device, dtype=self.dtype, copy=True)
            return made.requires_grad_(requires_grad)
        return torch.tensor(data, dtype=self.dtype, device=self.device, requires_grad=requires_grad)

    def __instancecheck__(self, obj: Any) -> bool:
        import torch

        return (isinstance(obj, torch.Tensor) and obj.dtype == self.dtype
                and obj.device.type == self.device.split(":")[0])

    def __repr__(self) -> str:
        return f"<accelops {self.type_name}: {self.dtype} on {self.device!r}>"
