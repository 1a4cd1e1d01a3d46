"""DeepSpeed's ``deepspeed.git_version_info`` names for code that reads them after install.

``version``; ``installed_ops`` (op name -> prebuilt into this install); ``compatible_ops`` (op name -> can be
built or loaded here: runs each op's compatibility check, the compiler probe once); ``torch_info``. The op
maps and ``torch_info`` are computed on first access, so importing this module does nothing.
"""
from typing import Any

from .version import __version__ as version

git_hash = "unknown"
git_branch = "unknown"


def _installed_ops() -> dict:
    from accelops.op_builder import all_ops
    from accelops.op_builder.prebuilt import prebuilt_status

    return {name: bool(prebuilt_status(cls())["installed"]) for name, cls in all_ops().items()}


def _torch_info() -> dict:
    import torch

    release = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    return {"version": release, "cuda_version": torch.version.cuda or "0.0", "hip_version": torch.version.hip or "0.0"}


def __getattr__(name: str) -> Any:
    from accelops.op_builder import compatible_ops

    makers = {"compatible_ops": compatible_ops, "installed_ops": _installed_ops, "torch_info": _torch_info}
    if name not in makers:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = makers[name]()
    globals()[name] = value
    return value
