"""accelops.accelerator: one accelerator object with DeepSpeed's method names on every device.

Importing this package does nothing else: no torch, no vendor package, no device probe.
"""
from .abstract_accelerator import Accelerator, DeepSpeedAccelerator
from .real_accelerator import (
    ENV_VAR,
    ENTRY_POINT_GROUP,
    ProbeResult,
    Selection,
    accelerator_names,
    accelerator_selection,
    available_accelerators,
    get_accelerator,
    is_current_accelerator_supported,
    probe_accelerators,
    reset_accelerator,
    set_accelerator,
)

__all__ = [
    "Accelerator",
    "DeepSpeedAccelerator",
    "ENV_VAR",
    "ENTRY_POINT_GROUP",
    "ProbeResult",
    "Selection",
    "accelerator_names",
    "accelerator_selection",
    "available_accelerators",
    "get_accelerator",
    "is_current_accelerator_supported",
    "probe_accelerators",
    "reset_accelerator",
    "set_accelerator",
]
