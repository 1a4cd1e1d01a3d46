"""The pin_memory op through DeepSpeed's handle (``PinMemoryBuilder().load().pin_handle()``): exact copies, locked
pages (``VmLck`` of /proc/self/status grows and shrinks back), views recognised, clear errors for bad inputs and
for an mlock refused by ``RLIMIT_MEMLOCK``."""
import gc
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from accelops.op_builder import PinMemoryBuilder
from accelops.ops.pin_memory.verify import locked_kib

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only (mmap, mlock)")
linux_only = pytest.mark.skipif(locked_kib() < 0, reason="needs VmLck in /proc/self/status")

MIB_FLOATS = 1 << 18  # 1 MiB of float32: 256 pages


@pytest.fixture(scope="module")
def handle():
    return PinMemoryBuilder().load(verbose=False).pin_handle()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.uint8, torch.bool])
def test_locked_tensor_holds_an_exact_copy(handle, dtype):
    source = (torch.randn(1000) * 100).to(dtype)
    locked = handle.new_cpu_locked_tensor(source.numel(), source)
    assert locked.dtype == dtype and locked.shape == (1000,) and locked.device.type == "cpu"
    assert not locked.any()  # fresh pages are zero
    locked.copy_(source)
    assert torch.equal(locked, source)
    assert locked.data_ptr() % os.sysconf("SC_PAGE_SIZE") == 0
    assert handle.is_pinned(locked) and handle.free_cpu_locked_tensor(locked) is True


@linux_only
def test_pages_are_locked_until_the_last_tensor_dies(handle):
    before = locked_kib()
    locked = handle.new_cpu_locked_tensor(MIB_FLOATS, torch.empty(0))
    assert locked_kib() - before >= 1024
    begin = locked.data_ptr()
    assert handle.locked_ranges()[begin] == begin + MIB_FLOATS * 4
    view = locked[100:200]
    del locked
    gc.collect()
    assert locked_kib() - before >= 1024 and handle.is_pinned(view)  # the view keeps the allocation
    del view
    gc.collect()
    assert locked_kib() == before and begin not in handle.locked_ranges()


@linux_only
def test_free_unlocks_at_once_and_the_memory_stays_valid_for_live_views(handle):
    before = locked_kib()
    locked = handle.new_cpu_locked_tensor(MIB_FLOATS, torch.empty(0))
    locked.copy_(torch.arange(MIB_FLOATS, dtype=torch.float32))
    view = locked[-8:]
    assert handle.free_cpu_locked_tensor(locked) is True
    assert locked_kib() == before
    assert not handle.is_pinned(locked) and not handle.is_pinned(view)
    assert view.tolist() == [float(i) for i in range(MIB_FLOATS - 8, MIB_FLOATS)]  # not freed under the view
    assert handle.free_cpu_locked_tensor(locked) is False  # nothing locked starts there any more
    assert handle.free_cpu_locked_tensor_by_ptr(locked.data_ptr()) is False


def test_is_pinned_recognises_views_and_nothing_else(handle):
    locked = handle.new_cpu_locked_tensor(64, torch.empty(0))
    grid = locked.view(8, 8)
    assert handle.is_pinned(grid[2]) and handle.is_pinned(grid[:, 3]) and handle.is_pinned(grid.t())
    assert not handle.is_pinned(torch.zeros(64))
    assert not handle.is_pinned(torch.zeros(2, device="meta"))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        assert not handle.is_pinned(mode.from_tensor(torch.zeros(4)))
    empty = handle.new_cpu_locked_tensor(0, torch.empty(0, dtype=torch.float16))
    assert empty.shape == (0,) and empty.dtype == torch.float16  # nothing to lock
    assert handle.free_cpu_locked_tensor_by_ptr(locked.data_ptr()) is True


def test_bad_inputs_are_clear_errors(handle):
    with pytest.raises(ValueError, match="num_elem must be >= 0, got -1"):
        handle.new_cpu_locked_tensor(-1, torch.empty(0))
    with pytest.raises(TypeError, match="num_elem must be an int, got float"):
        handle.new_cpu_locked_tensor(2.0, torch.empty(0))
    with pytest.raises(TypeError, match="example_tensor must be a torch.Tensor.*got dtype"):
        handle.new_cpu_locked_tensor(2, torch.float32)
    with pytest.raises(TypeError, match="address must be an int, got str"):
        handle.free_cpu_locked_tensor_by_ptr("0x10")
    with pytest.raises(TypeError, match="is_pinned: expected a torch.Tensor, got list"):
        handle.is_pinned([1.0])
    assert handle.new_cpu_locked_tensor(4, torch.empty(0, device="meta", dtype=torch.int8)).dtype == torch.int8


MLOCK_REFUSED = textwrap.dedent("""
    import os, resource, torch
    from accelops.op_builder import PinMemoryBuilder
    handle = PinMemoryBuilder().load(verbose=False).pin_handle()
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))
    if os.geteuid() == 0:  # root may lock past the limit (CAP_IPC_LOCK): become nobody, which drops it
        os.setgid(65534)
        os.setuid(65534)
    try:
        handle.new_cpu_locked_tensor(1 << 20, torch.empty(0))
    except RuntimeError as exc:
        print("REFUSED", exc)
    small = handle.new_cpu_locked_tensor(1024, torch.empty(0))  # the refused mapping was given back
    print("SMALL", handle.is_pinned(small))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_MEMLOCK semantics of Linux")
def test_mlock_past_rlimit_memlock_names_the_limit_and_the_size(handle):
    result = subprocess.run([sys.executable, "-c", MLOCK_REFUSED], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    refused = next(line for line in result.stdout.splitlines() if line.startswith("REFUSED"))
    assert "mlock of 4194304 bytes (1048576 elements of 4 bytes" in refused
    assert "RLIMIT_MEMLOCK is 65536 bytes (hard limit 65536 bytes)" in refused and "ulimit -l" in refused
    assert "SMALL True" in result.stdout


PREBUILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension
    from accelops.op_builder import PinMemoryBuilder, op_library
    from accelops.ops.pin_memory.handle import PinMemoryModule
    out = Path(sys.argv[1])
    ext = PinMemoryBuilder().builder()  # what DS_BUILD_PIN_MEMORY=1 compiles in a wheel
    setup(name="prebuild", ext_modules=[ext], cmdclass={"build_ext": BuildExtension},
          script_args=["-q", "build_ext", "--build-lib", str(out / "lib"), "--build-temp", str(out / "tmp")])
    path = next((out / "lib").rglob("accelops_pin_memory_host*"))
    handle = PinMemoryModule(op_library.load_library(path, "accelops_pin_memory_host")).pin_handle()
    locked = handle.new_cpu_locked_tensor(16, __import__("torch").empty(0))
    print(ext.name, handle.is_pinned(locked), handle.free_cpu_locked_tensor(locked))
""")


def test_ds_build_pin_memory_prebuilds_the_op(monkeypatch, tmp_path):
    from accelops.op_builder import all_ops, prebuilt

    for key in [k for k in os.environ if k.startswith("DS_BUILD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DS_BUILD_PIN_MEMORY", "1")
    assert prebuilt.plan(all_ops())[0] == {"pin_memory": ["host"]}  # one variant: no CPU tier
    result = subprocess.run([sys.executable, "-c", PREBUILD, str(tmp_path)], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == ["accelops.prebuilt.accelops_pin_memory_host", "True", "True"]
