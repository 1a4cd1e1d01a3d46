"""DeepSpeed's ``deepspeed.git_version_info`` names for code that reads them after install.

``version``; ``installed_ops`` (op name -> prebuilt into this install); ``compatible_ops`` (op name -> can be
built or loaded here: runs each op's compatibility check, the compiler probe once); ``torch_info`` (DeepSpeed's
keys: ``version``, ``bf16_support``, ``cuda_version``, ``nccl_version``, ``hip_version``). The op
maps and ``torch_info`` are computed on first access, so importing this module does nothing.
"""
import sys
from typing import Any

from .version import __version__ as version

git_hash = "unknown"
git_branch = "unknown"


def _installed_ops() -> dict:
    from accelops.op_builder import all_ops
    from accelops.op_builder.prebuilt import prebuilt_status

    return {name: bool(prebuilt_status(cls())["installed"]) for name, cls in all_ops().items()}


def _major_minor(version) -> str:
    """``"12.4"`` from ``"12.4.131"``, ``(2, 21, 5)`` or ``"6.2.41133-dd7f95766"``; DeepSpeed's ``"0.0"`` for none."""
    if not version:
        return "0.0"
    parts = [str(p) for p in version] if isinstance(version, (tuple, list)) else str(version).split("+")[0].split(".")
    return ".".join(parts[:2])


def _torch_info() -> dict:
    """DeepSpeed's keys, values ``"major.minor"`` (``"0.0"`` when absent, the sentinel its readers check)."""
    import torch

    nccl = None
    if torch.version.cuda and sys.platform != "win32":
        try:
            nccl = torch.cuda.nccl.version()  # no CUDA context
            nccl = tuple(str(nccl)[:2]) if isinstance(nccl, int) else nccl  # old torch: 2708 -> "2.7"
        except (AttributeError, RuntimeError):
            nccl = None
    # bf16 of device 0, asked only where CUDA is initialised already: reading it would create a CUDA context
    # (which breaks fork()). get_accelerator().is_bf16_supported() is the live answer.
    bf16 = bool(torch.cuda.is_available() and torch.cuda.is_initialized() and torch.cuda.is_bf16_supported())
    return {"version": _major_minor(torch.__version__), "bf16_support": bf16,
            "cuda_version": _major_minor(torch.version.cuda), "nccl_version": _major_minor(nccl),
            "hip_version": _major_minor(torch.version.hip)}


def __getattr__(name: str) -> Any:
    from accelops.op_builder import compatible_ops

    makers = {"compatible_ops": compatible_ops, "installed_ops": _installed_ops, "torch_info": _torch_info}
    if name not in makers:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = makers[name]()
    globals()[name] = value
    return value
