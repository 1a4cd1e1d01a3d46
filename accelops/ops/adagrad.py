"""DeepSpeed's ``deepspeed.ops.adagrad`` names: ``from accelops.ops.adagrad import DeepSpeedCPUAdagrad``."""
from .cpu_adagrad import DeepSpeedCPUAdagrad

__all__ = ["DeepSpeedCPUAdagrad"]
