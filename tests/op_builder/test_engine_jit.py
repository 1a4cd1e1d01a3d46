"""End-to-end JIT cache behaviour with the test-only ``tiny`` op (each build takes about a second)."""
import os
import signal
import time

import pytest

from accelops.op_builder import OpBuildError
from accelops.op_builder import jit_cache
from accelops.op_builder.cpu_tier import detect_tier

from conftest import run_loader, start_loader
from tiny_builder import TinyBuilder


def _entry(cache_dir):
    entries = [p for p in cache_dir.iterdir() if p.is_dir() and p.name.startswith("accelops_tiny_")
               and ".tmp-" not in p.name]
    assert len(entries) == 1, entries
    return entries[0]


def test_cold_build_then_warm_load_without_compiling(cache_dir, tiny_csrc):
    code, out, err = run_loader()
    assert code == 0, err
    tier, value, path = out.split()
    assert tier == detect_tier() and float(value) == 5.0
    assert "building op tiny" in err
    entry = _entry(cache_dir)
    assert path.startswith(str(entry))
    assert oct(cache_dir.stat().st_mode & 0o777) == "0o700"
    code, out, err = run_loader("--no-compile")
    assert code == 0, err
    assert out.split()[:2] == [tier, value] and "building" not in err


def test_concurrent_cold_loads_build_once(cache_dir, tiny_csrc):
    procs = [start_loader() for _ in range(4)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in results), [err for _, err, _ in results]
    assert all(float(out.split()[1]) == 5.0 for out, _, _ in results)
    builds = sum(err.count("accelops: building op tiny") for _, err, _ in results)
    assert builds == 2  # one build: its start line and its "done" line, in one process only
    assert sum("accelops: building op tiny" in err for _, err, _ in results) == 1


def test_sigkill_mid_build_leaves_nothing_blocking(cache_dir, tiny_csrc):
    # Make the compile slow enough to be killed mid-way: a header that takes a while to compile.
    (tiny_csrc / "includes" / "slow.h").write_text(
        "template <int N> struct Slow { static constexpr long v = Slow<N - 1>::v + N; };\n"
        "template <> struct Slow<0> { static constexpr long v = 0; };\n")
    src = tiny_csrc / "tiny" / "tiny_op.cpp"
    body = "".join(f"static long slow_{i} = Slow<{800 + i}>::v;\n" for i in range(400))
    src.write_text('#include "slow.h"\n' + body + src.read_text())
    proc = start_loader()
    deadline = time.time() + 120
    while time.time() < deadline and not list(cache_dir.glob("accelops_tiny_*.tmp-*/build/*.ninja")):
        time.sleep(0.05)
    assert proc.poll() is None, "the builder finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert list(cache_dir.glob("accelops_tiny_*.tmp-*")), "the killed builder left no temporary folder"
    code, out, err = run_loader()
    assert code == 0, err
    assert float(out.split()[1]) == 5.0
    assert not list(cache_dir.glob("accelops_tiny_*.tmp-*"))  # the next builder cleaned up


def test_truncated_object_is_detected_and_rebuilt(cache_dir, tiny_csrc):
    assert run_loader()[0] == 0
    entry = _entry(cache_dir)
    obj = next(entry.glob("*.so"))
    obj.write_bytes(obj.read_bytes()[:1000])
    code, out, err = run_loader()
    assert code == 0, err
    assert "cached object unusable" in err and "truncated" in err
    assert float(out.split()[1]) == 5.0


def test_same_size_corruption_is_detected_and_rebuilt(cache_dir, tiny_csrc):
    assert run_loader()[0] == 0
    obj = next(_entry(cache_dir).glob("*.so"))
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    code, out, err = run_loader()
    assert code == 0, err
    assert "sha256" in err


def test_entry_folder_without_manifest_is_replaced(cache_dir, tiny_csrc):
    assert run_loader()[0] == 0
    entry = _entry(cache_dir)
    (entry / "manifest.json").unlink()  # e.g. a copy that lost a file; the folder still exists
    code, out, err = run_loader()
    assert code == 0, err
    assert "cached object unusable (not built)" in err
    assert float(out.split()[1]) == 5.0


def test_cache_writable_by_others_is_refused(cache_dir, tiny_csrc):
    cache_dir.mkdir(mode=0o700)
    os.chmod(cache_dir, 0o777)
    with pytest.raises(PermissionError, match="must be yours and not writable by group or others"):
        TinyBuilder().load(verbose=False)


def test_compile_error_shows_tail_and_log(cache_dir, tiny_csrc):
    src = tiny_csrc / "tiny" / "tiny_op.cpp"
    src.write_text(src.read_text() + "\nthis is not C++;\n")
    with pytest.raises(OpBuildError) as info:
        TinyBuilder().load(verbose=False)
    message = str(info.value)
    assert "building op tiny failed" in message and "this is not C++" in message
    log = message.rsplit("full log: ", 1)[1].strip()
    assert os.path.isfile(log) and "error" in open(log).read()
    assert not list(cache_dir.glob("accelops_tiny_*.tmp-*"))


def test_lock_timeout_names_lock_and_wait(cache_dir, tiny_csrc, monkeypatch):
    builder = TinyBuilder()
    name = builder.module_name(builder.variant(), builder.cache_key())
    monkeypatch.setenv("ACCELOPS_BUILD_LOCK_TIMEOUT", "1")
    with jit_cache.build_lock(jit_cache.cache_root(), name, "test"):
        code, out, err = run_loader()
    assert code != 0
    assert "gave up waiting for the build lock" in err and f"locks/{name}.lock" in err
    assert "after 1 s" in err or "after 2 s" in err


def test_no_compiler_error(cache_dir, tiny_csrc, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/bin/g++")
    compat = TinyBuilder().is_compatible()
    assert not compat
    assert any("no C++ compiler" in r and "/nonexistent/bin/g++" in r for r in compat.reasons)
    with pytest.raises(OpBuildError, match="no C\\+\\+ compiler"):
        TinyBuilder().load(verbose=False)


def test_compiler_that_does_not_run_is_a_reason(cache_dir, tiny_csrc, monkeypatch, tmp_path):
    from accelops.op_builder import toolchain

    broken = tmp_path / "broken-c++"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CXX", str(broken))
    toolchain.probe_version.cache_clear()
    reasons = TinyBuilder().is_compatible().reasons
    assert any("C++ compiler does not run" in r and "exited 3" in r for r in reasons), reasons


def test_no_ninja_error(cache_dir, tiny_csrc, monkeypatch):
    import shutil

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "ninja" else real_which(cmd, *a, **k))
    compat = TinyBuilder().is_compatible()
    assert not compat and any("ninja is not installed" in r for r in compat.reasons)


def test_an_entry_that_is_a_file_is_replaced_and_leaves_nothing_behind(cache_dir, tiny_csrc):
    builder = TinyBuilder()
    name = builder.module_name(builder.variant(), builder.cache_key())
    cache_dir.mkdir(mode=0o700)
    (cache_dir / name).write_text("a stray file where the entry folder belongs")
    code, out, err = run_loader()
    assert code == 0, err
    assert (cache_dir / name).is_dir()
    assert not list(cache_dir.glob("*.tmp-*")), list(cache_dir.glob("*.tmp-*"))


def test_a_cache_that_load_refuses_is_not_reported_as_cached(cache_dir, tiny_csrc):
    code, out, err = run_loader()
    assert code == 0, err
    assert TinyBuilder().cache_entry()[1] is None
    cache_dir.chmod(0o770)  # group-writable: load() refuses to import from it
    folder, problem = TinyBuilder().cache_entry()
    assert problem is not None and problem.startswith("the cache is not used:") and "chmod 700" in problem
    code, out, err = run_loader()
    assert code != 0 and "must be yours and not writable by group or others" in err
