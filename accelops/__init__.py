"""accelops: a pluggable accelerator layer and ops build system for PyTorch.

``from accelops.accelerator import get_accelerator`` is the entry point. Importing accelops
imports nothing heavy and probes no device.
"""
from .version import __version__

__all__ = ["__version__"]
