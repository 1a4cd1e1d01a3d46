"""Fixtures for the build-engine tests: a private JIT cache per test and a subprocess runner."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh ``ACCELOPS_CACHE_DIR`` for this test (also seen by subprocesses)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ACCELOPS_CACHE_DIR", str(path))
    return path


@pytest.fixture
def tiny_csrc(tmp_path, monkeypatch):
    """A writable copy of the tiny op's csrc/, used by the builder in this process and in subprocesses."""
    import shutil

    path = tmp_path / "csrc"
    shutil.copytree(HERE / "csrc", path)
    monkeypatch.setenv("TINY_CSRC", str(path))
    return path


def start_loader(*flags):
    """Start ``load_tiny.py`` in a subprocess (same env); returns the Popen."""
    return subprocess.Popen([sys.executable, str(HERE / "load_tiny.py"), *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def run_loader(*flags, timeout=300):
    """Run ``load_tiny.py`` to completion; returns (returncode, stdout, stderr)."""
    proc = start_loader(*flags)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
