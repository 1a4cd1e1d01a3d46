"""``deepspeed.moe``: mixture of experts on ``torch.distributed`` (all-to-all between expert-parallel ranks).

:class:`~accelops.moe.layer.MoE` is the layer; :mod:`.sharded_moe` has the gating and the dispatch;
:mod:`.experts` the local experts; :mod:`.utils` the parameter helpers. The engine reduces expert gradients
over their expert-data-parallel group only (:mod:`accelops.runtime.moe_grads`)."""
from .layer import MoE

__all__ = ["MoE"]
