"""DeepSpeed's ``deepspeed.ops.adam`` names: ``from accelops.ops.adam import DeepSpeedCPUAdam, FusedAdam``."""
from .cpu_adam import DeepSpeedCPUAdam
from .fused_adam import FusedAdam

__all__ = ["DeepSpeedCPUAdam", "FusedAdam"]
