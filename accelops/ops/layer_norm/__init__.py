"""Fused residual-add + layer norm, one op in one place.

``build`` (the CPU and CUDA builders), ``validate`` (the one validator), ``reference`` (the torch
reference), ``ops`` (the ``accelops::add_layer_norm_fwd/bwd`` ops, fakes, CPU kernels, autograd and
``fused_add_layer_norm``), ``cuda`` (the CUDA/ROCm kernels), ``module`` (``FusedLayerNorm``) and
``verify`` (``ds_report --verify``'s checks). Importing this package defines the ops and registers their
CUDA kernels (so direct ``torch.ops`` calls on CUDA tensors use them); it builds nothing.
"""
from . import cuda
from .module import FusedLayerNorm
from .ops import add_layer_norm_bwd, add_layer_norm_fwd, fused_add_layer_norm, layer_norm_path

__all__ = ["FusedLayerNorm", "add_layer_norm_bwd", "add_layer_norm_fwd", "fused_add_layer_norm", "layer_norm_path"]

cuda.register()
