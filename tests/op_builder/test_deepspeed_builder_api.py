"""A builder written only against DeepSpeed's op-builder API builds and loads through accelops' engine.

The builder classes below use DeepSpeed's names and call shapes (``op_builder/builder.py`` of DeepSpeed 0.19):
``super().__init__(name=self.NAME)``, ``BUILD_VAR``, ``absolute_name()``, ``sources()`` with absolute paths,
``include_paths()``, ``cxx_args()`` extending ``super().cxx_args()``, ``extra_ldflags()``, ``is_compatible(verbose=)``,
``load(verbose=)``, ``jit_load()``, ``builder()``.
"""
import importlib
from pathlib import Path

import pytest

from accelops.op_builder import (CUDAOpBuilder, MissingCUDAException, OpBuilder, TorchCPUOpBuilder,
                                 compatible_ops, installed_cuda_version)
from accelops.op_builder import jit_cache

TINY = Path(__file__).resolve().parent / "csrc"


class MyTinyBuilder(TorchCPUOpBuilder):
    BUILD_VAR = "DS_BUILD_MY_TINY"
    NAME = "my_tiny"

    def __init__(self):
        super().__init__(name=self.NAME)

    def absolute_name(self):
        return f"my_package.ops.{self.NAME}_op"

    def sources(self):
        return [str(TINY / "tiny" / "tiny_op.cpp")]

    def include_paths(self):
        return [str(TINY / "includes")]

    def cxx_args(self):
        return super().cxx_args() + ["-DMY_TINY_FLAG=1"]

    def extra_ldflags(self):
        return ["-lm"]


class MyPlainBuilder(OpBuilder):
    """Derived from the plain OpBuilder, as DeepSpeed's host-only ops are: no tier, no OpenMP from the engine."""

    NAME = "my_plain"

    def __init__(self):
        super().__init__(name=self.NAME)

    def sources(self):
        return [str(TINY / "tiny" / "tiny_op.cpp")]

    def include_paths(self):
        return [str(TINY / "includes")]

    def cxx_args(self):
        return ["-DACCELOPS_CPU_SCALAR"]  # the tiny op reports this macro as its tier


def test_names_and_flags():
    builder = MyTinyBuilder()
    assert builder.name == builder.NAME == "my_tiny" and builder.BUILD_VAR == "DS_BUILD_MY_TINY"
    assert MyPlainBuilder.BUILD_VAR == "DS_BUILD_MY_PLAIN"  # derived from NAME when a class does not set it
    args = builder.build_args(builder.variant())
    assert "-DMY_TINY_FLAG=1" in args["cflags"] and "-fopenmp" in args["cflags"] and "-lm" in args["ldflags"]
    plain = MyPlainBuilder().build_args(MyPlainBuilder().variant())
    assert "-fopenmp" not in plain["cflags"] and "-ffp-contract=off" in plain["cflags"]
    assert not OpBuilder.is_rocm_pytorch()
    with pytest.raises(ValueError, match="differs from its NAME"):
        TorchCPUOpBuilder.__init__(MyTinyBuilder.__new__(MyTinyBuilder), name="other")


@pytest.mark.parametrize("cls", [MyTinyBuilder, MyPlainBuilder])
def test_builds_and_loads_through_the_engine(cache_dir, cls):
    builder = cls()
    assert builder.is_compatible(verbose=True)
    module = builder.load(verbose=False)
    assert module.scale(1.5) == 3.0
    assert module.tier() == ("scalar" if cls is MyPlainBuilder else builder.variant())
    entry = Path(module.__file__).parent
    assert entry.parent == cache_dir and jit_cache.verified_object(entry, entry.name) is None  # cached, locked, verified
    assert builder.jit_load(verbose=False) is module  # the same cache entry, loaded once per process


def test_builder_returns_the_setuptools_extension():
    ext = MyTinyBuilder().builder()
    assert ext.name == "my_package.ops.my_tiny_op"
    assert ext.sources == [str(TINY / "tiny" / "tiny_op.cpp")]
    assert str(TINY / "includes") in ext.include_dirs and "-lm" in ext.extra_link_args
    assert "-DMY_TINY_FLAG=1" in ext.extra_compile_args["cxx"]


def test_cuda_names(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-cuda"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingCUDAException, match="my_op: no CUDA toolkit found"):
        installed_cuda_version("my_op")

    class MyCudaBuilder(CUDAOpBuilder):
        NAME = "my_cuda"

        def sources(self):
            return []

    flags = MyCudaBuilder().compute_capability_args(cross_compile_archs="8.0;9.0")
    assert flags == ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]
    assert MyCudaBuilder().compute_capability_args(["8.6"]) == ["-gencode=arch=compute_86,code=sm_86"]


def test_every_builder_class_imports_from_the_package_and_the_compatible_map():
    package = importlib.import_module("accelops.op_builder")
    for name in ("CPUAdamBuilder", "CPUAdagradBuilder", "CPULionBuilder", "FusedAdamBuilder"):
        assert getattr(package, name).__name__ == name
    ops = compatible_ops()
    assert ops["cpu_adam"] is True and set(ops) >= {"cpu_adam", "cpu_adagrad", "cpu_lion", "fused_adam"}
    assert all(isinstance(v, bool) for v in ops.values())


def test_git_version_info_names():
    import subprocess
    import sys

    import accelops
    from accelops import git_version_info

    assert git_version_info.version == accelops.__version__
    assert git_version_info.compatible_ops == compatible_ops()
    assert set(git_version_info.installed_ops) == set(compatible_ops())
    assert all(isinstance(v, bool) for v in git_version_info.installed_ops.values())
    import torch

    assert torch.__version__.startswith(git_version_info.torch_info["version"])
    code = "import sys, accelops.git_version_info; print('torch' in sys.modules)"  # importing it does nothing
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_builder_names_are_listed_by_dir():
    package = importlib.import_module("accelops.op_builder")
    names = dir(package)
    assert {"CPUAdamBuilder", "FusedAdamBuilder", "CPULionBuilder"} <= set(names)
    assert all(getattr(package, name) is not None for name in names if name.endswith("Builder"))
