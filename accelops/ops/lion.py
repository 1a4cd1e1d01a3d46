"""DeepSpeed's ``deepspeed.ops.lion`` names: ``from accelops.ops.lion import DeepSpeedCPULion, FusedLion``."""
from .cpu_lion import DeepSpeedCPULion
from .fused_lion import FusedLion

__all__ = ["DeepSpeedCPULion", "FusedLion"]
