"""DeepSpeed's ``deepspeed.ops.lion`` names: ``from accelops.ops.lion import DeepSpeedCPULion``."""
from .cpu_lion import DeepSpeedCPULion

__all__ = ["DeepSpeedCPULion"]
