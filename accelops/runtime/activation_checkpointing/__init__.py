"""DeepSpeed's ``deepspeed.runtime.activation_checkpointing``: the submodule ``checkpointing`` is
``deepspeed.checkpointing`` (``accelops.checkpointing`` after ``import accelops``). Importing this package
imports no torch; ``checkpointing`` is imported on first access."""
from importlib import import_module

__all__ = ["checkpointing"]


def __getattr__(name):
    if name == "checkpointing":
        return import_module(f"{__name__}.checkpointing")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"checkpointing"})
