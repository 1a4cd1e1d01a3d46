"""accelops: a pluggable accelerator layer and ops build system for PyTorch.

``from accelops.accelerator import get_accelerator`` is the entry point. Importing accelops
imports nothing heavy and probes no device.

DeepSpeed's top-level training names are here too, loaded on first use (so ``import accelops as
deepspeed`` runs DeepSpeed's getting-started scripts): ``initialize`` (the training engine, see
:mod:`accelops.runtime.entry`), ``add_config_arguments``, ``init_distributed`` and
``DeepSpeedEngine``. DeepSpeed's subpackages are attributes as after ``import deepspeed``, each imported on
first access: ``accelops.comm``, ``accelops.ops``, ``accelops.accelerator``, ``accelops.utils``,
``accelops.runtime`` and ``accelops.profiling``, and ``accelops.zero`` (``accelops.runtime.zero``, as
``deepspeed.zero`` is ``deepspeed.runtime.zero``), and ``accelops.checkpointing``
(``accelops.runtime.activation_checkpointing.checkpointing``, as ``deepspeed.checkpointing`` is).
"""
from ._lazy import lazy_attributes
from .version import __version__

_LAZY = {
    "initialize": "accelops.runtime.entry",
    "add_config_arguments": "accelops.runtime.args",
    "init_distributed": "accelops.comm",
    "DeepSpeedEngine": "accelops.runtime.engine",
    "DeepSpeedConfigError": "accelops.runtime.errors",
    "zero": "accelops.runtime",
    "PipelineModule": "accelops.pipe",
    "PipelineEngine": "accelops.runtime.pipe.engine",
    "checkpointing": "accelops.runtime.activation_checkpointing",
}

#: DeepSpeed's subpackages that ``import deepspeed`` makes reachable as attributes.
_SUBPACKAGES = ("accelerator", "comm", "moe", "ops", "pipe", "profiling", "runtime", "utils")

__all__ = ["__version__", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY, _SUBPACKAGES)
