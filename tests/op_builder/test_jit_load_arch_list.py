"""``jit_load`` and ``TORCH_CUDA_ARCH_LIST`` with DeepSpeed's meaning (its tests/unit/ops/test_op_builder.py): while
the build runs, ``jit_mode`` is True and ``_jit_arch_list`` is the variable as it was (stripped); afterwards, after a
failed or a successful build, the variable is exactly as before (or unset again), ``_jit_arch_list`` is None and
``jit_mode`` is back. No CUDA here: the builder's ``nvcc_args`` is DeepSpeed-style (it calls
``compute_capability_args``, which rewrites the variable) and the compile and import steps of the engine are
replaced, as DeepSpeed's tests replace ``torch.utils.cpp_extension.load``."""
import os

import pytest

from accelops.op_builder import Compatibility, CUDAOpBuilder, jit_cache, pipeline

ARCH = "TORCH_CUDA_ARCH_LIST"


class DeepSpeedStyleCuda(CUDAOpBuilder):
    NAME = "jit_arch_stub"

    def __init__(self):
        super().__init__(name=self.NAME)
        self.seen = []  # (jit_mode, _jit_arch_list, TORCH_CUDA_ARCH_LIST) at each nvcc_args call
        self.fail = False

    def sources(self):
        return []

    def is_compatible(self, verbose=False):
        return Compatibility()

    def nvcc_args(self):
        flags = self.compute_capability_args()
        self.seen.append((self.jit_mode, getattr(self, "_jit_arch_list", None), os.environ.get(ARCH)))
        if self.fail:
            raise RuntimeError("build failed")
        return flags


@pytest.fixture
def arch_env(monkeypatch, cache_dir):
    """Set or unset TORCH_CUDA_ARCH_LIST for one test (monkeypatch puts the outer value back)."""
    def set_to(value):
        if value is None:
            monkeypatch.delenv(ARCH, raising=False)
        else:
            monkeypatch.setenv(ARCH, value)
    return set_to


def assert_restored(builder, value, jit_mode=False):
    assert os.environ.get(ARCH) == value and (ARCH in os.environ) == (value is not None)
    assert getattr(builder, "_jit_arch_list", None) is None and builder.jit_mode is jit_mode


@pytest.mark.parametrize("value, arch_list, written", [("8.9", "8.9", "8.9+PTX"), (" 8.0 8.9 ", "8.0 8.9", "8.0;8.9+PTX")])
def test_a_failed_build_restores_the_variable_and_the_state(arch_env, value, arch_list, written):
    arch_env(value)
    builder = DeepSpeedStyleCuda()
    builder.fail = True
    with pytest.raises(RuntimeError, match="build failed"):
        builder.jit_load(verbose=False)
    assert builder.seen == [(True, arch_list, written)]
    assert_restored(builder, value)


def test_a_failed_build_without_the_variable_leaves_it_unset(arch_env, monkeypatch):
    import torch

    arch_env(None)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    builder = DeepSpeedStyleCuda()
    builder.fail = True
    with pytest.raises(RuntimeError, match="build failed"):
        builder.jit_load(verbose=False)
    assert builder.seen == [(True, None, "9.0+PTX")]  # the visible devices, as DeepSpeed's jit_mode
    assert_restored(builder, None)


def test_a_successful_build_restores_the_variable_and_the_state(arch_env, monkeypatch):
    arch_env("8.9")
    builder = DeepSpeedStyleCuda()
    at_build = []
    op_module = object()

    def compile_step(b, build_dir, variant, name, verbose, root):
        at_build.append((b.jit_mode, b._jit_arch_list, os.environ[ARCH]))
        (build_dir / f"{name}{jit_cache.EXT}").write_bytes(b"not a library")  # what the cache entry records

    monkeypatch.setattr(pipeline, "_compile", compile_step)
    monkeypatch.setattr(pipeline, "_import", lambda b, folder, name, variant, origin:
                        pipeline.Loaded(op_module, origin, variant))
    assert builder.jit_load(verbose=False) is op_module
    assert at_build == [(True, "8.9", "8.9+PTX")]  # the build saw the list compute_capability_args wrote
    assert_restored(builder, "8.9")


def test_jit_mode_set_before_stays_set(arch_env):
    arch_env("8.0")
    builder = DeepSpeedStyleCuda()
    builder.jit_mode = True
    builder.fail = True
    with pytest.raises(RuntimeError, match="build failed"):
        builder.jit_load(verbose=False)
    assert_restored(builder, "8.0", jit_mode=True)


def test_a_builder_answering_is_compatible_with_a_bool(arch_env):
    """DeepSpeed's builders answer is_compatible() with a bool; False is a reason naming the op, True builds."""
    arch_env("8.0")

    class Refusing(DeepSpeedStyleCuda):
        def is_compatible(self, verbose=False):
            return False

    from accelops.op_builder import OpBuildError

    with pytest.raises(OpBuildError, match="cannot build op jit_arch_stub: jit_arch_stub's is_compatible\\(\\) "
                                           "returned False"):
        Refusing().jit_load(verbose=False)
    assert os.environ[ARCH] == "8.0"
