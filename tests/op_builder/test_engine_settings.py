"""Settings the engine reads from the environment: bad values are clear errors or reasons, one rule each."""
import pytest

from accelops.op_builder import ALL_OPS, jit_cache, toolchain


@pytest.mark.parametrize("raw", ["nan", "0", "-5", "abc", "-inf"])
def test_a_lock_timeout_that_is_not_a_positive_number_is_an_error(monkeypatch, raw):
    monkeypatch.setenv("ACCELOPS_BUILD_LOCK_TIMEOUT", raw)
    with pytest.raises(ValueError, match=f"ACCELOPS_BUILD_LOCK_TIMEOUT='{raw}': expected a positive number"):
        jit_cache.lock_timeout()


@pytest.mark.parametrize("raw, expected", [("", 3600.0), ("2.5", 2.5), ("inf", float("inf")), (" 10 ", 10.0)])
def test_a_positive_lock_timeout_or_inf_is_taken(monkeypatch, raw, expected):
    monkeypatch.setenv("ACCELOPS_BUILD_LOCK_TIMEOUT", raw)
    assert jit_cache.lock_timeout() == expected


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_cxx_is_a_reason_not_the_default_compiler(monkeypatch, value):
    # torch's extension builder runs an empty CXX as the compiler command, so a build would fail
    monkeypatch.setenv("CXX", value)
    compat = ALL_OPS["cpu_adam"]().is_compatible()
    assert not compat and any(r.startswith("CXX is set but empty") for r in compat.reasons), compat.reasons
    assert toolchain.compiler_command() == "''"


def _cache_error(monkeypatch, root):
    from tiny_builder import TinyBuilder

    monkeypatch.setenv("ACCELOPS_CACHE_DIR", str(root))
    with pytest.raises(OSError) as info:
        TinyBuilder().load(verbose=False)
    return str(info.value)


def test_a_cache_path_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch, tiny_csrc):
    root = tmp_path / "cache"
    root.write_text("not a folder")
    message = _cache_error(monkeypatch, root)
    assert f"cannot use the op cache: the folder {root}" in message and "ACCELOPS_CACHE_DIR" in message


def test_a_locks_entry_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch, tiny_csrc):
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    (root / "locks").write_text("not a folder")
    message = _cache_error(monkeypatch, root)
    assert f"cannot use the op cache: the lock folder {root / 'locks'}" in message


def test_a_read_only_cache_is_a_clear_error(tmp_path, monkeypatch, tiny_csrc):
    import errno
    import tempfile

    def read_only(*args, **kwargs):  # what mkdtemp raises in a folder without write permission (root ignores it)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    root = tmp_path / "cache"
    message = _cache_error(monkeypatch, root)
    assert f"cannot use the op cache: the folder {root}: Permission denied" in message


def test_the_default_cache_on_windows_is_under_localappdata(tmp_path, monkeypatch):
    import sys

    for name in ("ACCELOPS_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "win32")  # simulated: pathlib keeps this system's paths
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "AppData" / "Local"))
    assert jit_cache.cache_root(create=False) == tmp_path / "AppData" / "Local" / "accelops" / "cache"
    monkeypatch.delenv("LOCALAPPDATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert jit_cache.cache_root(create=False) == tmp_path / "home" / "AppData" / "Local" / "accelops" / "cache"


FAKE_CL = """#!/bin/sh
echo "Microsoft (R) C/C++ Optimizing Compiler Version 19.44.35211 for x64" >&2
echo "Copyright (C) Microsoft Corporation.  All rights reserved." >&2
if [ $# -gt 0 ]; then
    echo "cl : Command line warning D9002 : ignoring unknown option '$1'" >&2
    echo "cl : Command line error D8003 : missing source filename" >&2
    exit 2
fi
echo "usage: cl [ option... ] filename... [ /link linkoption... ]"
"""


def test_msvc_is_probed_by_its_banner_not_version(tmp_path, monkeypatch):
    """Simulated Windows: a fake ``cl`` that, like the real one, rejects --version and prints its banner."""
    import os

    from accelops.report.environment import cxx_compiler_facts

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cl").write_text(FAKE_CL)
    (bin_dir / "cl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(toolchain, "is_msvc", lambda: True)
    toolchain.probe_version.cache_clear()
    toolchain.probe_msvc.cache_clear()
    assert toolchain.compiler_command() == "cl"
    assert toolchain.probe_version(("cl",))[0] == "`cl --version` exited 2"  # what a --version probe would say
    facts = cxx_compiler_facts()
    assert facts["found"] and facts["version"].startswith("Microsoft (R) C/C++ Optimizing Compiler Version 19.44")
    reasons = ALL_OPS["cpu_adam"]().is_compatible().reasons
    assert not any("C++ compiler" in r for r in reasons), reasons
    (bin_dir / "cl").write_text("#!/bin/sh\necho 'not a compiler'\n")  # something else named cl
    toolchain.probe_msvc.cache_clear()
    assert any("printed no MSVC compiler banner" in r for r in ALL_OPS["cpu_adam"]().is_compatible().reasons)
    toolchain.probe_msvc.cache_clear()
