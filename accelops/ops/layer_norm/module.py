"""``FusedLayerNorm``: a layer norm module over the last dimension with an optional fused residual add."""
import torch
from torch import Tensor, nn

from .ops import fused_add_layer_norm

__all__ = ["FusedLayerNorm"]


class FusedLayerNorm(nn.Module):
    """``nn.LayerNorm(normalized_shape)`` (last dimension only) that can also add a residual first.

    ``forward(x, residual=None)`` returns ``layer_norm(x + residual)``; with ``return_sum=True`` it returns
    ``(y, x + residual)`` so the sum can be the next block's residual. Input, weight and bias must share
    a dtype (float32, bfloat16 or float16); the math is float32 inside. Runs the ``accelops`` custom ops
    (CPU kernel, CUDA kernel or the pure-torch fallback), so it traces under ``torch.compile``.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, (tuple, list)):
            if len(normalized_shape) != 1:
                raise ValueError(f"FusedLayerNorm normalizes the last dimension only; got normalized_shape "
                                 f"{tuple(normalized_shape)}")
            normalized_shape = normalized_shape[0]
        self.normalized_shape = (int(normalized_shape),)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(self.normalized_shape, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape, device=device, dtype=dtype))

    @property
    def backend(self) -> str:
        """``"kernel"`` when the compiled op of the weight's device runs (it loads on first use), else ``"torch"``."""
        loader = self._loader()
        return "kernel" if loader is not None and loader.module() is not None else "torch"

    @property
    def backend_reason(self):
        """Why this path runs on the weight's device: why the pure-torch path runs, or, while a kernel does,
        the op, its variant and where its module was loaded from (prebuilt, JIT cache, JIT build)."""
        loader = self._loader()
        if loader is None:
            return f"no add + layer norm kernel for device {self.weight.device.type}"
        return loader.backend_reason

    def _loader(self):
        """The kernel loader of the weight's device, or None where there is no kernel."""
        from .cuda import CUDA_LOADER
        from .ops import CPU_LOADER

        return {"cpu": CPU_LOADER, "cuda": CUDA_LOADER}.get(self.weight.device.type)

    def forward(self, x: Tensor, residual: Tensor = None, return_sum: bool = False):
        """Layer norm of ``x`` (+ ``residual``); see the class docstring."""
        return fused_add_layer_norm(x, residual, self.weight, self.bias, self.eps, return_sum=return_sum)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"
