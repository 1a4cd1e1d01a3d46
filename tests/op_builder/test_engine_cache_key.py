"""The cache key changes with each of its inputs, and only then."""
import sys

import pytest
import torch

import accelops.version
from accelops.op_builder import builder as builder_module

from tiny_builder import TinyBuilder


@pytest.fixture
def key(tiny_csrc):
    return lambda **kw: TinyBuilder().cache_key(**kw)


def test_key_is_stable(key):
    assert key() == key()


def test_source_change(key, tiny_csrc):
    before = key()
    src = tiny_csrc / "tiny" / "tiny_op.cpp"
    src.write_text(src.read_text() + "\n// edit\n")
    assert key() != before


def test_header_change(key, tiny_csrc):
    before = key()
    header = tiny_csrc / "includes" / "tiny_scale.h"
    header.write_text(header.read_text().replace("2.0", "3.0"))
    assert key() != before


def test_flags_change(key, monkeypatch):
    before = key()
    monkeypatch.setattr(TinyBuilder, "cxx_args", lambda self: ["-DTINY_EXTRA=1"])
    assert key() != before


def test_tier_change(key):
    assert key(variant="scalar") != key(variant="avx2")


@pytest.mark.parametrize("attr", ["cuda", "hip"])
def test_torch_cuda_hip_version_change(key, monkeypatch, attr):
    before = key()
    monkeypatch.setattr(torch.version, attr, "99.9")
    assert key() != before


def test_torch_version_change(key, monkeypatch):
    before = key()
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert key() != before


def test_compiler_change(key, monkeypatch):
    before = key()
    monkeypatch.setenv("CXX", sys.executable)  # any other existing executable: another compiler identity
    assert key() != before


def test_accelops_version_change(key, monkeypatch):
    before = key()
    monkeypatch.setattr(accelops.version, "__version__", "99.0.0")
    assert key() != before


def test_python_change(key, monkeypatch):
    before = key()
    monkeypatch.setattr(sys.implementation, "cache_tag", "cpython-399")
    assert key() != before


def test_missing_source_is_a_clear_error(tiny_csrc):
    (tiny_csrc / "tiny" / "tiny_op.cpp").unlink()
    with pytest.raises(builder_module.OpBuildError, match="source files not found: .*tiny_op.cpp"):
        TinyBuilder().cache_key()
