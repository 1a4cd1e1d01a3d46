"""Host memory figures on a simulated Windows: kernel32 through ctypes, no POSIX-only module touched.

The fake kernel32 fills the real ctypes structures the way Windows does, so the structure layouts and the
calls that pass them are exercised; /proc, ``resource`` and ``os.sysconf`` are made unavailable.
"""
import ctypes
import os
import sys

import pytest

from accelops.accelerator import host_memory
from accelops.accelerator.cpu_accelerator import CpuAccelerator

GIB = 1 << 30


class FakeKernel32:
    """GetCurrentProcess, K32GetProcessMemoryInfo and GlobalMemoryStatusEx as Windows answers them."""

    def __init__(self, fail=False):
        self.fail = fail
        self.calls = []

    def GetCurrentProcess(self):
        return -1  # the pseudo handle

    def K32GetProcessMemoryInfo(self, process, counters_ref, size):
        self.calls.append("K32GetProcessMemoryInfo")
        counters = counters_ref._obj
        assert process == -1 and size == ctypes.sizeof(counters) == counters.cb
        if self.fail:
            return 0
        counters.WorkingSetSize = 300 << 20
        counters.PeakWorkingSetSize = 512 << 20
        return 1

    def GlobalMemoryStatusEx(self, status_ref):
        self.calls.append("GlobalMemoryStatusEx")
        status = status_ref._obj
        if status.dwLength != ctypes.sizeof(status) or self.fail:
            return 0  # Windows refuses a structure whose length field is not set
        status.ullTotalPhys = 64 * GIB
        status.ullAvailPhys = 40 * GIB
        return 1


@pytest.fixture
def windows(monkeypatch, tmp_path):
    kernel32 = FakeKernel32()
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(host_memory, "_PROC_STATUS", str(tmp_path / "no-proc-status"))
    monkeypatch.setattr(host_memory, "_PROC_MEMINFO", str(tmp_path / "no-proc-meminfo"))
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` raises ImportError, as on Windows
    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed
    monkeypatch.delattr(os, "sysconf")
    monkeypatch.setattr(host_memory, "_kernel32", lambda: kernel32)
    return kernel32


def test_figures_come_from_kernel32(windows):
    assert host_memory.resident_bytes() == 300 << 20
    assert host_memory.peak_resident_bytes() == 512 << 20
    assert host_memory.host_total_bytes() == 64 * GIB
    assert host_memory.host_available_bytes() == 40 * GIB
    assert host_memory.reset_peak_resident() is False  # no clear_refs: says it could not, does not raise


def test_cpu_backend_memory_methods_work(windows):
    cpu = CpuAccelerator()
    assert cpu.memory_allocated() == 300 << 20
    assert cpu.max_memory_allocated() == 512 << 20
    assert cpu.total_memory() == 64 * GIB
    stats = cpu.memory_stats()
    assert stats["host_available_bytes"] == 40 * GIB and stats["allocated_bytes.all.peak"] == 512 << 20


def test_a_failing_call_is_a_clear_error(windows):
    windows.fail = True
    with pytest.raises(OSError, match="K32GetProcessMemoryInfo failed"):
        host_memory.resident_bytes()
    with pytest.raises(OSError, match="GlobalMemoryStatusEx failed"):
        host_memory.host_total_bytes()


def test_macos_without_psutil_has_no_available_figure(monkeypatch, tmp_path):
    """macOS has SC_PHYS_PAGES but no SC_AVPHYS_PAGES: the total is read, available is 0, nothing raises."""
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(host_memory, "_PROC_MEMINFO", str(tmp_path / "no-proc-meminfo"))
    monkeypatch.setitem(sys.modules, "psutil", None)
    real_sysconf = os.sysconf

    def sysconf(name):
        if name == "SC_AVPHYS_PAGES":
            raise ValueError("unrecognized configuration name")
        return real_sysconf(name)

    monkeypatch.setattr(os, "sysconf", sysconf)
    assert host_memory.host_total_bytes() == real_sysconf("SC_PAGE_SIZE") * real_sysconf("SC_PHYS_PAGES")
    assert host_memory.host_available_bytes() == 0
