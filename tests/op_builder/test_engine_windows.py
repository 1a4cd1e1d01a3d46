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
    """Windows refuses to rename a folder holding a loaded library: a rename of such a folder fails here too,
    and the build must still load, from the published entry."""
    import torch

    from accelops.op_builder import pipeline
    from tiny_builder import TinyBuilder

    loaded = []
    real_load = torch.ops.load_library

    def recording_load(path):
        loaded.append(os.path.realpath(path))
        return real_load(path)

    real_rename = os.rename

    def windows_rename(src, dst, *args, **kwargs):
        inside = os.path.realpath(src) + os.sep
        if any(path.startswith(inside) for path in loaded):
            raise PermissionError(13, "Access is denied (a file in this folder is loaded)", str(src))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(torch.ops, "load_library", recording_load)
    monkeypatch.setattr(os, "rename", windows_rename)
    monkeypatch.setattr(pipeline, "_loaded", {})
    result = pipeline.load(TinyBuilder(), verbose=False)
    assert result.origin == "build"
    entry = next(p for p in cache_dir.iterdir() if p.name.startswith("accelops_tiny_") and ".tmp-" not in p.name)
    assert loaded == [os.path.realpath(entry / f"{entry.name}{jit_cache.EXT}")]  # one load, from the entry
    assert result.module.__file__ == str(entry / f"{entry.name}{jit_cache.EXT}")
    assert not list(cache_dir.glob("accelops_tiny_*.tmp-*"))  # the temporary folder became the entry


FAKE_CL = """#!/bin/sh
echo "Microsoft (R) C/C++ Optimizing Compiler Version 19.44.35211 for x64" >&2
echo "usage: cl [ option... ] filename... [ /link linkoption... ]"
"""


@pytest.fixture
def msvc(monkeypatch, tmp_path):
    """Simulated Windows x64 with MSVC installed but not on PATH: setuptools' lookup (faked at its import
    location) returns the environment vcvarsall would, whose PATH holds a fake ``cl``."""
    from accelops.op_builder import toolchain

    vs_bin = tmp_path / "VC" / "bin"
    vs_bin.mkdir(parents=True)
    (vs_bin / "cl.exe").write_text(FAKE_CL)  # shutil.which follows sys.platform: it looks for cl + PATHEXT
    (vs_bin / "cl.exe").chmod(0o755)
    monkeypatch.setenv("PATHEXT", ".exe")
    lookup = types.ModuleType("setuptools._distutils.compilers.C.msvc")
    lookup.asked = []

    def get_vc_env(spec):
        lookup.asked.append(spec)
        if lookup.missing:
            raise RuntimeError("Unable to find vcvarsall.bat")  # what setuptools says without Visual Studio
        return {"path": f"{vs_bin}{os.pathsep}{os.environ['PATH']}", "include": str(tmp_path / "VC" / "include")}

    lookup._get_vc_env = get_vc_env
    lookup.missing = False
    monkeypatch.setitem(sys.modules, "setuptools._distutils.compilers.C.msvc", lookup)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr("sysconfig.get_platform", lambda: "win-amd64")
    for name in ("CXX", "VSCMD_ARG_TGT_ARCH", "DISTUTILS_USE_SDK"):
        monkeypatch.delenv(name, raising=False)
    caches = (toolchain.visual_studio_env, toolchain.probe_msvc)
    for cache in caches:
        cache.cache_clear()
    lookup.bin = vs_bin
    yield lookup
    for cache in caches:
        cache.cache_clear()


def _compiler_reasons():
    from accelops.op_builder import ALL_OPS

    return [r for r in ALL_OPS["cpu_adam"]().is_compatible().reasons if "compiler" in r]


def test_msvc_outside_a_developer_prompt_is_found_as_torch_finds_it(msvc):
    from accelops.op_builder import toolchain
    from accelops.report.environment import cxx_compiler_facts

    assert toolchain.compiler_command() == "cl"
    assert toolchain.compiler_path() == str(msvc.bin / "cl.exe")
    assert _compiler_reasons() == []
    facts = cxx_compiler_facts()
    assert facts["found"] and facts["path"] == str(msvc.bin / "cl.exe") and facts["version"].startswith("Microsoft (R)")
    assert msvc.asked == ["x86_amd64"]  # torch's PLAT_TO_VCVARS argument, asked once per process


def test_no_visual_studio_is_a_reason_with_the_way_out(msvc):
    from accelops.report.environment import cxx_compiler_facts

    msvc.missing = True
    reasons = _compiler_reasons()
    assert len(reasons) == 1
    assert "MSVC's `cl` is not on PATH" in reasons[0] and "Unable to find vcvarsall.bat" in reasons[0]
    assert "Desktop development with C++" in reasons[0] and "Native Tools Command Prompt" in reasons[0]
    facts = cxx_compiler_facts()
    assert not facts["found"] and "Unable to find vcvarsall.bat" in facts["reason"]


def test_a_developer_prompt_is_used_as_it_is(msvc, monkeypatch):
    monkeypatch.setenv("VSCMD_ARG_TGT_ARCH", "x64")
    assert any("the prompt's PATH holds no cl" in r for r in _compiler_reasons())
    monkeypatch.setenv("PATH", f"{msvc.bin}{os.pathsep}{os.environ['PATH']}")
    assert _compiler_reasons() == []
    assert msvc.asked == []  # Visual Studio is not activated a second time


def test_a_wheel_build_in_a_developer_prompt_passes_torchs_abi_check(msvc, monkeypatch):
    """torch's BuildExtension stops a build in a developer prompt without DISTUTILS_USE_SDK; the prebuild sets
    it (and says so) before torch checks."""
    from torch.utils import cpp_extension

    from accelops.op_builder import toolchain

    monkeypatch.setattr(cpp_extension, "IS_WINDOWS", True)
    monkeypatch.setattr(cpp_extension, "get_compiler_abi_compatibility_and_version",
                        lambda compiler: (True, cpp_extension.TorchVersion("19.44.35211")))
    builder = types.SimpleNamespace(compiler=object())  # MSVC's compiler object has no compiler_cxx
    monkeypatch.setenv("VSCMD_ARG_TGT_ARCH", "x64")
    with pytest.raises(UserWarning, match="DISTUTILS_USE_SDK is not set"):
        cpp_extension.BuildExtension._check_abi(builder)
    note = toolchain.adopt_developer_prompt()
    assert "DISTUTILS_USE_SDK=1" in note and os.environ["DISTUTILS_USE_SDK"] == "1"
    assert cpp_extension.BuildExtension._check_abi(builder) == ("cl", "19.44.35211")
    assert toolchain.adopt_developer_prompt() is None  # already set: nothing changed, nothing said
    monkeypatch.delenv("VSCMD_ARG_TGT_ARCH")
    monkeypatch.delenv("DISTUTILS_USE_SDK")
    assert toolchain.adopt_developer_prompt() is None  # no prompt: setuptools finds Visual Studio itself
    assert "DISTUTILS_USE_SDK" not in os.environ


def test_the_cache_folder_has_no_posix_owner_check_on_windows(monkeypatch, tmp_path):
    """Windows folders carry ACLs, not POSIX mode bits (Python reports them as 0o777): the per-user
    %LOCALAPPDATA% folder is accepted where Linux would refuse a group-writable one."""
    root = tmp_path / "cache"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    monkeypatch.setenv(jit_cache.CACHE_ENV, str(root))
    with pytest.raises(PermissionError, match="must be yours and not writable by group or others"):
        jit_cache.cache_root()
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.delattr(os, "getuid")  # there is none on Windows
    assert jit_cache.cache_root() == root
    assert jit_cache.unusable_reason(root) is None


def test_nvcc_is_nvcc_exe_on_windows(monkeypatch, tmp_path):
    from accelops.op_builder import cuda_checks

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc.exe").write_text("")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert cuda_checks.nvcc_path() is None  # Linux: bin/nvcc
    monkeypatch.setattr(sys, "platform", "win32")
    assert cuda_checks.nvcc_path() == str(tmp_path / "bin" / "nvcc.exe")


def test_prebuild_messages_reach_the_windows_console(monkeypatch, capsys):
    from accelops.op_builder import setup_support

    opened = []

    class Console:
        def __init__(self, name, mode):
            opened.append((name, mode))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            opened.append(text)

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(setup_support, "open", Console, raising=False)
    setup_support.say("building cpu_adam (avx2)")
    assert opened == [("CONOUT$", "w"), "accelops prebuild: building cpu_adam (avx2)\n"]
    assert "accelops prebuild: building cpu_adam (avx2)" in capsys.readouterr().err
