"""JIT builds with fake compilers (shell scripts as CXX): every failure is one OpBuildError, no torch traceback."""
import shutil
import sys

import pytest

from conftest import run_loader

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fake compilers are POSIX shell scripts")

ANSWERS_VERSION_ONLY = """#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = "--version" ]; then echo "g++ (fake) 12.2.0"; exit 0; fi
done
echo "fake g++: cannot compile anything" >&2
exit 1
"""

PRODUCES_NOTHING = """#!/bin/sh
exit 0
"""

# A working compiler behind a wrapper that refuses torch's version query (-dumpfullversion), as some do.
REFUSES_VERSION_QUERY = """#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = "-dumpfullversion" ]; then echo "wrapper: no version query" >&2; exit 1; fi
done
exec {real} "$@"
"""


def _fake(tmp_path, name, text):
    """Write an executable script ``tmp_path/fakebin/name``; returns its path."""
    folder = tmp_path / "fakebin"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_compiler_that_produces_nothing_is_an_op_build_error(cache_dir, tiny_csrc, monkeypatch, tmp_path):
    fake = _fake(tmp_path, "nothing-c++", PRODUCES_NOTHING)
    monkeypatch.setenv("CXX", str(fake))
    code, out, err = run_loader()
    assert code != 0
    assert "FileNotFoundError" not in err, err
    assert "OpBuildError: accelops: building op tiny failed" in err, err
    assert f"the compiler `{fake}`" in err and "produced no library" in err, err
    assert not list(cache_dir.glob("accelops_tiny_*.tmp-*")), "a failed build left its temporary folder"


def test_compiler_that_fails_to_compile_prints_no_torch_traceback(cache_dir, tiny_csrc, monkeypatch, tmp_path):
    # Named g++ so that torch accepts it for the platform and then queries its version (which fails).
    fake = _fake(tmp_path, "g++", ANSWERS_VERSION_ONLY)
    monkeypatch.setenv("CXX", str(fake))
    code, out, err = run_loader()
    assert code != 0
    assert "OpBuildError: accelops: building op tiny failed; compiler output (tail)" in err, err
    assert "fake g++: cannot compile anything" in err, err
    assert "Error checking compiler version" not in err, err
    assert err.count("Traceback") == 1, err  # only the loader's own uncaught OpBuildError


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a real g++ behind the wrapper")
def test_build_through_wrapper_that_refuses_version_query_notes_it_in_one_line(cache_dir, tiny_csrc, monkeypatch,
                                                                               tmp_path):
    fake = _fake(tmp_path, "g++", REFUSES_VERSION_QUERY.format(real=shutil.which("g++")))
    monkeypatch.setenv("CXX", str(fake))
    code, out, err = run_loader()
    assert code == 0, err
    assert "Traceback" not in err, err
    notes = [line for line in err.splitlines() if "torch could not check the compiler's ABI" in line]
    assert len(notes) == 1 and "Error checking compiler version for" in notes[0], err
