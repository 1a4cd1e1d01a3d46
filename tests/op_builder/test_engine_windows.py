"""The engine's Windows branches, executed on Linux under a simulated platform.

``sys.platform`` is set to ``win32`` (``os.name`` stays, so pathlib keeps this system's paths); Windows-only
modules and programs are fakes that follow the documented behaviour: ``msvcrt.locking`` locks bytes from the
current file position and fails at once (LK_NBLCK) while another handle holds them.
"""
import os
import sys
import threading
import types

import pytest

from accelops.op_builder import jit_cache


def fake_msvcrt():
    """A ``msvcrt`` with ``locking``: byte-range locks per file, not re-entrant, released by LK_UNLCK."""
    held = {}  # (dev, inode, offset) -> fd
    guard = threading.Lock()
    module = types.ModuleType("msvcrt")
    module.LK_UNLCK, module.LK_LOCK, module.LK_NBLCK = 0, 1, 2
    module.calls = []

    def locking(fd, mode, nbytes):
        assert nbytes == 1
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        module.calls.append((mode, key[2]))
        with guard:
            if mode == module.LK_NBLCK:
                if key in held:  # held by any handle, this one included: Windows byte locks do not nest
                    raise PermissionError(13, "Permission denied")
                held[key] = fd
            elif mode == module.LK_UNLCK:
                if held.get(key) != fd:
                    raise PermissionError(13, "Permission denied")
                del held[key]
            else:
                raise AssertionError(f"unexpected locking mode {mode}")

    module.locking = locking
    module.held = held
    return module


@pytest.fixture
def windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    msvcrt = fake_msvcrt()
    monkeypatch.setitem(sys.modules, "msvcrt", msvcrt)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` fails, as it does on Windows
    return msvcrt


def test_build_lock_uses_msvcrt_on_the_first_byte(windows, tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    with jit_cache.build_lock(root, "accelops_x", "op x"):
        assert len(windows.held) == 1
    assert not windows.held
    assert windows.calls == [(windows.LK_NBLCK, 0), (windows.LK_UNLCK, 0)]


def test_a_held_lock_makes_the_second_builder_wait_then_give_up(windows, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv(jit_cache.LOCK_TIMEOUT_ENV, "0.3")
    with jit_cache.build_lock(root, "accelops_x", "op x"):
        with pytest.raises(jit_cache.CacheLockTimeout, match="gave up waiting for the build lock"):
            with jit_cache.build_lock(root, "accelops_x", "op x"):
                pass
    with jit_cache.build_lock(root, "accelops_x", "op x"):  # released: taken at once
        pass
    assert not windows.held


def test_the_lock_is_released_when_the_build_fails(windows, tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    with pytest.raises(RuntimeError, match="compiler exploded"):
        with jit_cache.build_lock(root, "accelops_x", "op x"):
            raise RuntimeError("compiler exploded")
    assert not windows.held


def test_a_waiter_gets_the_lock_when_the_holder_releases_it(windows, tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    holding, release, order = threading.Event(), threading.Event(), []

    def holder():
        with jit_cache.build_lock(root, "accelops_x", "op x"):
            holding.set()
            release.wait(5)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    threading.Timer(0.3, release.set).start()
    with jit_cache.build_lock(root, "accelops_x", "op x"):
        order.append("waiter in")
    thread.join(5)
    assert order == ["holder done", "waiter in"]


def test_a_jit_build_is_published_before_anything_is_loaded(cache_dir, tiny_csrc, monkeypatch):
    """Windows refuses to rename a folder holding a loaded ``.pyd``: a rename of such a folder fails here too,
    and the build must still load, from the published entry."""
    import importlib.util

    from accelops.op_builder import pipeline
    from tiny_builder import TinyBuilder

    loaded = []
    real_spec = importlib.util.spec_from_file_location

    def recording_spec(name, location=None, *args, **kwargs):
        if str(location).endswith(jit_cache.EXT):
            loaded.append(os.path.realpath(location))
        return real_spec(name, location, *args, **kwargs)

    real_rename = os.rename

    def windows_rename(src, dst, *args, **kwargs):
        inside = os.path.realpath(src) + os.sep
        if any(path.startswith(inside) for path in loaded):
            raise PermissionError(13, "Access is denied (a file in this folder is loaded)", str(src))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "spec_from_file_location", recording_spec)
    monkeypatch.setattr(os, "rename", windows_rename)
    monkeypatch.setattr(pipeline, "_loaded", {})
    result = pipeline.load(TinyBuilder(), verbose=False)
    assert result.origin == "build"
    entry = next(p for p in cache_dir.iterdir() if p.name.startswith("accelops_tiny_") and ".tmp-" not in p.name)
    assert loaded == [os.path.realpath(entry / f"{entry.name}{jit_cache.EXT}")]  # one import, from the entry
    assert result.module.__file__ == str(entry / f"{entry.name}{jit_cache.EXT}")
    assert not list(cache_dir.glob("accelops_tiny_*.tmp-*"))  # the temporary folder became the entry
