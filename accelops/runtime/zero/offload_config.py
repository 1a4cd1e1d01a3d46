"""DeepSpeed's offload enums (``deepspeed.runtime.zero.offload_config``), used by
``engine.offload_states``. String enums, so ``"cpu"`` and ``OffloadDeviceEnum.cpu`` compare equal."""
from enum import Enum


class OffloadDeviceEnum(str, Enum):
    """Where states may be offloaded: ``none``, ``cpu`` or ``nvme`` (accelops offloads to ``cpu`` only)."""
    none = "none"
    cpu = "cpu"
    nvme = "nvme"


class OffloadStateTypeEnum(str, Enum):
    """Which engine states ``offload_states`` moves (DeepSpeed's names; what each is in accelops is in
    :mod:`accelops.runtime.offload_states`)."""
    optim_states = "optim_states"
    hp_params = "hp_params"
    lp_params = "lp_params"
    lp_grads = "lp_grads"
    contiguous_grad_buffer = "contiguous_grad_buffer"
