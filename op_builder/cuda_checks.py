"""CUDA/ROCm toolchain checks for CUDA op builds: nvcc version vs torch, and the arch list.

Everything here except ``arch_inputs`` runs only on the build path (never on a cache hit): it may spawn ``nvcc``.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from typing import List, Optional, Tuple

SKIP_CHECK_ENV = "DS_SKIP_CUDA_CHECK"
#: Cross-compile defaults, oldest first; filtered by what the installed nvcc accepts.
DEFAULT_ARCHES = ("7.0", "7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0")


def cuda_home() -> Optional[str]:
    """The CUDA toolkit folder, found the way torch's extension builder finds it: ``CUDA_HOME``, ``CUDA_PATH``,
    the folder above ``nvcc`` on PATH, else ``/usr/local/cuda``. Cheap: no import of torch.utils.cpp_extension
    (which imports setuptools), so it may run on the warm-load path."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return "/usr/local/cuda" if os.path.isdir("/usr/local/cuda") else None


def nvcc_path() -> Optional[str]:
    home = cuda_home()
    if not home:
        return None
    path = os.path.join(home, "bin", "nvcc.exe" if sys.platform == "win32" else "nvcc")
    return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=None)
def _run(command: Tuple[str, ...]) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return result.stdout + result.stderr


def nvcc_version(nvcc: str) -> Tuple[int, int]:
    """``(major, minor)`` from ``nvcc --version`` (``release 13.0, V13.0.48``)."""
    match = re.search(r"release (\d+)\.(\d+)", _run((nvcc, "--version")))
    if not match:
        raise RuntimeError(f"cannot read the CUDA version from `{nvcc} --version`")
    return int(match.group(1)), int(match.group(2))


def version_mismatch(nvcc: Tuple[int, int], torch_cuda: str) -> Tuple[Optional[str], Optional[str]]:
    """``(error, warning)`` comparing the nvcc version with torch's CUDA version (``"13.0"``).

    A major mismatch is an error, a minor one a warning; ``DS_SKIP_CUDA_CHECK=1`` turns both off.
    """
    if os.environ.get(SKIP_CHECK_ENV, "0") not in ("", "0"):
        return None, None
    torch_major, torch_minor = (int(part) for part in torch_cuda.split(".")[:2])
    both = f"nvcc is CUDA {nvcc[0]}.{nvcc[1]} but torch was built with CUDA {torch_cuda}"
    if nvcc[0] != torch_major:
        return (f"{both}: the major versions must match. Install a CUDA {torch_major}.x toolkit (point CUDA_HOME at "
                f"it) or a torch build for CUDA {nvcc[0]}; {SKIP_CHECK_ENV}=1 skips this check"), None
    if nvcc[1] != torch_minor:
        return None, f"{both}; minor versions differ, which usually works"
    return None, None


def nvcc_arches(nvcc: str) -> List[str]:
    """Compute capabilities ``nvcc --list-gpu-arch`` accepts, as ``"8.0"`` strings."""
    found = re.findall(r"compute_(\d+)", _run((nvcc, "--list-gpu-arch")))
    return [f"{int(code) // 10}.{int(code) % 10}" for code in found]


def arch_list(nvcc: Optional[str]) -> Tuple[List[str], str]:
    """``(arches, source)``: ``TORCH_CUDA_ARCH_LIST``, else the visible devices, else nvcc-supported defaults.

    Each arch is ``"8.0"`` or ``"9.0+PTX"``; the defaults end with ``+PTX`` on the newest one.
    """
    configured = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if configured:
        return [a for a in re.split(r"[;\s,]+", configured) if a], "TORCH_CUDA_ARCH_LIST"
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        caps = sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return caps, "the visible devices"
    supported = set(nvcc_arches(nvcc)) if nvcc else set()
    arches = [a for a in DEFAULT_ARCHES if a in supported] or ["8.0", "9.0"]
    arches[-1] += "+PTX"
    return arches, "defaults supported by nvcc (no visible device)"


def arch_inputs() -> str:
    """What ``arch_list`` would resolve from, without running nvcc: ``TORCH_CUDA_ARCH_LIST``, the visible
    devices' capabilities, or ``"nvcc defaults"`` (then the nvcc identity in the cache key decides)."""
    configured = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if configured:
        return f"TORCH_CUDA_ARCH_LIST={configured}"
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        caps = sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return "devices " + ";".join(caps)
    return "nvcc defaults " + ";".join(DEFAULT_ARCHES)


def canonical_arches(arches: List[str]) -> List[str]:
    """``arches`` sorted by compute capability with each arch once, ``+PTX`` when any of its entries had it:
    ``["8.0", "7.5", "8.0+PTX"]`` -> ``["7.5", "8.0+PTX"]`` (how torch itself reads a repeated arch)."""
    ptx = {}
    for arch in arches:
        number = arch[: -len("+PTX")] if arch.endswith("+PTX") else arch
        match = re.fullmatch(r"(\d+)\.(\d+)([af]?)", number)
        if not match:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST entry {arch!r}: expected a compute capability like 8.0 or 9.0+PTX")
        key = (int(match.group(1)), int(match.group(2)), match.group(3))
        ptx[key] = ptx.get(key, False) or arch.endswith("+PTX")
    return [f"{major}.{minor}{suffix}{'+PTX' if ptx[major, minor, suffix] else ''}"
            for major, minor, suffix in sorted(ptx)]


def gencode_flags(arches: List[str]) -> List[str]:
    """nvcc ``-gencode`` flags for ``["8.0", "9.0+PTX"]`` (named arches like ``Hopper`` are refused)."""
    flags = []
    for arch in arches:
        ptx = arch.endswith("+PTX")
        number = arch[: -len("+PTX")] if ptx else arch
        if not re.fullmatch(r"\d+\.\d+[af]?", number):
            raise ValueError(f"TORCH_CUDA_ARCH_LIST entry {arch!r}: expected a compute capability like 8.0 or 9.0+PTX")
        code = number.replace(".", "")
        flags.append(f"-gencode=arch=compute_{code},code=sm_{code}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{code},code=compute_{code}")
    return flags
