"""``deepspeed.zero`` (reached as ``accelops.zero``): ZeRO-3 construction and gathering.

:class:`Init` builds a model that is never whole on one rank (:mod:`.partition_parameters`);
:class:`GatheredParameters` gives full parameters inside a block (:mod:`.gathered`); the engine turns a
model built inside ``Init`` into its FSDP2 model (:mod:`.materialize`). DeepSpeed's offload enums are in
:mod:`.offload_config`.
"""
from .gathered import GatheredParameters
from .partition_parameters import Init
from .zero_param import ZeroParamStatus, is_zero_param

__all__ = ["GatheredParameters", "Init", "ZeroParamStatus", "is_zero_param"]
