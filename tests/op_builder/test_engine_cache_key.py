"""The cache key changes with each of its inputs, and only then. Not with the torch release, the Python or
accelops' version: the library binds through torch's stable ABI (its ABI floor is checked on load)."""
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
def test_a_gpu_op_key_follows_the_cuda_hip_major_but_not_the_minor(monkeypatch, attr):
    from accelops.op_builder import ALL_OPS

    builder = ALL_OPS["fused_adam"]()
    monkeypatch.setattr(torch.version, attr, "99.1")
    before = builder.cache_key("cuda")
    monkeypatch.setattr(torch.version, attr, "99.9")
    assert builder.cache_key("cuda") == before
    monkeypatch.setattr(torch.version, attr, "98.1")
    assert builder.cache_key("cuda") != before


def test_a_cpu_op_key_is_the_same_under_the_cpu_and_cuda_builds_of_torch(key, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    before = key()
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert key() == before


def test_same_key_under_another_torch_python_or_accelops(key, monkeypatch):
    before = key()
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    monkeypatch.setattr(sys.implementation, "cache_tag", "cpython-399")
    monkeypatch.setattr(accelops.version, "__version__", "99.0.0")
    assert key() == before


def test_compiler_change(key, monkeypatch):
    before = key()
    monkeypatch.setenv("CXX", sys.executable)  # any other existing executable: another compiler identity
    assert key() != before


def test_missing_source_is_a_clear_error(tiny_csrc):
    (tiny_csrc / "tiny" / "tiny_op.cpp").unlink()
    with pytest.raises(builder_module.OpBuildError, match="source files not found: .*tiny_op.cpp"):
        TinyBuilder().cache_key()


def test_cuda_op_key_spawns_nothing_and_follows_the_arch_inputs(monkeypatch):
    # A warm CUDA-op load computes this key: it must not run nvcc (or anything else).
    import subprocess

    from accelops.op_builder import ALL_OPS, cuda_checks

    cuda_checks._run.cache_clear()

    def no_process(*args, **kwargs):
        raise AssertionError(f"the cache key spawned a process: {args}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    builder = ALL_OPS["fused_adam"]()
    default = builder.cache_key("cuda")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    sm80 = builder.cache_key("cuda")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert len({default, sm80, builder.cache_key("cuda")}) == 3


def test_rocm_key_follows_pytorch_rocm_arch(monkeypatch):
    from accelops.op_builder import ALL_OPS

    builder = ALL_OPS["fused_adam"]()
    monkeypatch.setenv("PYTORCH_ROCM_ARCH", "gfx90a")
    before = builder.cache_key("hip")
    monkeypatch.setenv("PYTORCH_ROCM_ARCH", "gfx942")
    assert builder.cache_key("hip") != before


def test_compiler_with_arguments_is_found(monkeypatch):
    from accelops.op_builder import ALL_OPS

    monkeypatch.setenv("CXX", f"{sys.executable} -E")  # an existing program plus a flag (it runs --version)
    reasons = ALL_OPS["cpu_adam"]().is_compatible().reasons
    assert not any("C++ compiler" in r for r in reasons), reasons


@pytest.fixture
def csrc_copy(tmp_path, monkeypatch):
    """A writable copy of the real csrc/ that every op of ALL_OPS builds from (restored after the test)."""
    import shutil

    from accelops.op_builder import OpBuilder

    path = tmp_path / "csrc"
    shutil.copytree(builder_module.CSRC, path)
    monkeypatch.setattr(OpBuilder, "csrc", lambda self: path)
    return path


def _touch(header):
    header.write_text(header.read_text() + "\n// edited\n")


def test_a_cuda_only_header_keys_the_cuda_ops_not_the_cpu_ops(csrc_copy):
    from accelops.op_builder import ALL_OPS

    cpu_adam, fused_adam = ALL_OPS["cpu_adam"](), ALL_OPS["fused_adam"]()
    before = cpu_adam.source_key("avx2"), fused_adam.source_key("cuda")
    _touch(csrc_copy / "includes" / "cuda_compat.cuh")  # included by the .cu kernels only
    assert cpu_adam.source_key("avx2") == before[0]
    assert fused_adam.source_key("cuda") != before[1]


def test_a_header_a_cpu_op_includes_transitively_keys_it(csrc_copy):
    from accelops.op_builder import ALL_OPS

    cpu_adam, fused_adam = ALL_OPS["cpu_adam"](), ALL_OPS["fused_adam"]()
    before = cpu_adam.source_key("avx2"), fused_adam.source_key("cuda")
    # cpu_adam.cpp includes cpu_optim_driver.h, which includes cpu_optim_kernels.h, which includes cpu_simd.h
    _touch(csrc_copy / "includes" / "cpu_simd.h")
    assert cpu_adam.source_key("avx2") != before[0]
    assert fused_adam.source_key("cuda") == before[1]


def test_only_included_headers_key_an_op_and_system_headers_do_not(key, tiny_csrc):
    """A header nobody includes (next to the source or in the include folder) changes nothing; a header reached
    through ``#include <...>`` in the include folder does, one of the system's does not."""
    before = key()
    (tiny_csrc / "includes" / "unused.h").write_text("#define UNUSED 1\n")
    (tiny_csrc / "tiny" / "unused_here.h").write_text("#define UNUSED_HERE 1\n")
    assert key() == before
    scale = tiny_csrc / "includes" / "tiny_scale.h"
    scale.write_text(scale.read_text() + '#include <tiny_more.h>\n#include <cstdint>\n#include "absent.h"\n')
    with_includes = key()
    assert with_includes != before
    (tiny_csrc / "includes" / "tiny_more.h").write_text("#define TINY_MORE 1\n")
    assert key() != with_includes  # now found in the include folder: part of the build
    with_more = key()
    _touch(tiny_csrc / "includes" / "tiny_more.h")
    assert key() != with_more
