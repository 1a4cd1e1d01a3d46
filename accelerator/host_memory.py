"""Process and host memory figures for the CPU backend, read without spawning anything.

Linux reads ``/proc``; Windows asks kernel32 through ctypes (``K32GetProcessMemoryInfo``,
``GlobalMemoryStatusEx``); elsewhere (macOS, BSD) psutil is used when installed, else ``resource`` and
``os.sysconf``. No POSIX-only module is touched on Windows.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Dict, Optional

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


# ---------------------------------------------------------------------------------------------- Windows
class _ProcessMemoryCounters(ctypes.Structure):
    """``PROCESS_MEMORY_COUNTERS`` (psapi.h)."""

    _fields_ = [("cb", ctypes.c_uint32), ("PageFaultCount", ctypes.c_uint32),
                ("PeakWorkingSetSize", ctypes.c_size_t), ("WorkingSetSize", ctypes.c_size_t),
                ("QuotaPeakPagedPoolUsage", ctypes.c_size_t), ("QuotaPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t), ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                ("PagefileUsage", ctypes.c_size_t), ("PeakPagefileUsage", ctypes.c_size_t)]


class _MemoryStatusEx(ctypes.Structure):
    """``MEMORYSTATUSEX`` (sysinfoapi.h)."""

    _fields_ = [("dwLength", ctypes.c_uint32), ("dwMemoryLoad", ctypes.c_uint32),
                ("ullTotalPhys", ctypes.c_uint64), ("ullAvailPhys", ctypes.c_uint64),
                ("ullTotalPageFile", ctypes.c_uint64), ("ullAvailPageFile", ctypes.c_uint64),
                ("ullTotalVirtual", ctypes.c_uint64), ("ullAvailVirtual", ctypes.c_uint64),
                ("ullAvailExtendedVirtual", ctypes.c_uint64)]


def _last_error() -> int:
    return ctypes.get_last_error() if hasattr(ctypes, "get_last_error") else 0


def _kernel32():
    """kernel32.dll (Windows only; tests replace this function)."""
    return ctypes.WinDLL("kernel32", use_last_error=True)


def _windows_process_counters() -> _ProcessMemoryCounters:
    kernel32 = _kernel32()
    counters = _ProcessMemoryCounters()
    counters.cb = ctypes.sizeof(counters)
    process = kernel32.GetCurrentProcess()
    if not kernel32.K32GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb):
        raise OSError(f"accelops: K32GetProcessMemoryInfo failed (Windows error {_last_error()})")
    return counters


def _windows_memory_status() -> _MemoryStatusEx:
    status = _MemoryStatusEx()
    status.dwLength = ctypes.sizeof(status)
    if not _kernel32().GlobalMemoryStatusEx(ctypes.byref(status)):
        raise OSError(f"accelops: GlobalMemoryStatusEx failed (Windows error {_last_error()})")
    return status


# ---------------------------------------------------------------------------------------------- macOS, BSD
def _psutil():
    try:
        import psutil

        return psutil
    except ImportError:
        return None


def _rusage_peak() -> int:
    import resource  # POSIX only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere


def _sysconf_bytes(pages: str) -> Optional[int]:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf(pages))
    except (ValueError, OSError, AttributeError):  # e.g. SC_AVPHYS_PAGES does not exist on macOS
        return None


# ---------------------------------------------------------------------------------------------- contract
def resident_bytes() -> int:
    """Current resident set size (Windows: working set) of this process in bytes. Without /proc, Windows
    or psutil this is the peak, the best figure ``resource`` offers."""
    if os.path.exists(_PROC_STATUS):
        return _read_kib_fields(_PROC_STATUS).get("VmRSS", 0)
    if sys.platform == "win32":
        return int(_windows_process_counters().WorkingSetSize)
    psutil = _psutil()
    return int(psutil.Process().memory_info().rss) if psutil else _rusage_peak()


def peak_resident_bytes() -> int:
    """Peak resident set size (Windows: peak working set) of this process since start or the last
    ``reset_peak_resident``."""
    if os.path.exists(_PROC_STATUS):
        return _read_kib_fields(_PROC_STATUS).get("VmHWM", 0)
    if sys.platform == "win32":
        return int(_windows_process_counters().PeakWorkingSetSize)
    return _rusage_peak()


def reset_peak_resident() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs`` 5). Returns False where impossible."""
    if not sys.platform.startswith("linux"):
        return False
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
    if sys.platform == "win32":
        return int(_windows_memory_status().ullTotalPhys)
    psutil = _psutil()
    if psutil:
        return int(psutil.virtual_memory().total)
    return _sysconf_bytes("SC_PHYS_PAGES") or 0


def host_available_bytes() -> int:
    """Memory the host can still hand out without swapping, in bytes (0 where the platform does not say:
    macOS without psutil)."""
    if os.path.exists(_PROC_MEMINFO):
        info = _read_kib_fields(_PROC_MEMINFO)
        return info.get("MemAvailable", info.get("MemFree", 0))
    if sys.platform == "win32":
        return int(_windows_memory_status().ullAvailPhys)
    psutil = _psutil()
    if psutil:
        return int(psutil.virtual_memory().available)
    return _sysconf_bytes("SC_AVPHYS_PAGES") or 0
