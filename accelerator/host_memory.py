"""Process and host memory figures for the CPU backend, read without spawning anything.

Linux reads ``/proc``; elsewhere psutil is used when installed, else ``resource.getrusage``.
"""
from __future__ import annotations

import os
import sys
from typing import Dict

_PROC_STATUS = "/proc/self/status"
_PROC_MEMINFO = "/proc/meminfo"


def _read_kib_fields(path: str) -> Dict[str, int]:
    """Parse ``Key:   123 kB`` lines of a /proc file into bytes."""
    fields: Dict[str, int] = {}
    with open(path) as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[key] = int(parts[0]) * 1024
    return fields


def _rusage_peak() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere


def resident_bytes() -> int:
    """Current resident set size of this process in bytes."""
    if os.path.exists(_PROC_STATUS):
        return _read_kib_fields(_PROC_STATUS).get("VmRSS", 0)
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return _rusage_peak()


def peak_resident_bytes() -> int:
    """Peak resident set size of this process since start or the last ``reset_peak_resident``."""
    if os.path.exists(_PROC_STATUS):
        return _read_kib_fields(_PROC_STATUS).get("VmHWM", 0)
    return _rusage_peak()


def reset_peak_resident() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs`` 5). Returns False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def host_total_bytes() -> int:
    """Physical memory of the host in bytes."""
    if os.path.exists(_PROC_MEMINFO):
        return _read_kib_fields(_PROC_MEMINFO).get("MemTotal", 0)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def host_available_bytes() -> int:
    """Memory the host can still hand out without swapping, in bytes."""
    if os.path.exists(_PROC_MEMINFO):
        info = _read_kib_fields(_PROC_MEMINFO)
        return info.get("MemAvailable", info.get("MemFree", 0))
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
