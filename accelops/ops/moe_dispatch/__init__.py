"""MoE dispatch and combine from routing indices (no dense ``[S, E, C]`` masks), one op in one place.

``build`` (the CPU and CUDA builders), ``validate`` (the one validator), ``reference`` (the torch reference,
index ops), ``ops`` (the ``accelops::moe_dispatch/moe_combine/moe_combine_bwd`` ops, fakes, CPU kernels,
autograd, the front ends ``moe_dispatch``/``moe_combine`` and ``MoEDispatcher``), ``cuda`` (the CUDA/ROCm
kernels) and ``verify`` (``ds_report --verify``'s checks). Importing this package defines the ops and
registers their CUDA kernels; it builds nothing.
"""
from . import cuda
from .ops import MoEDispatcher, moe_combine, moe_dispatch

__all__ = ["MoEDispatcher", "moe_combine", "moe_dispatch"]

cuda.register()
