"""A builder written only against DeepSpeed's op-builder API builds and loads through accelops' engine.

The builder classes below use DeepSpeed's names and call shapes (``op_builder/builder.py`` of DeepSpeed 0.19):
``super().__init__(name=self.NAME)``, ``BUILD_VAR``, ``absolute_name()``, ``sources()`` with absolute paths,
``include_paths()``, ``cxx_args()`` extending ``super().cxx_args()``, ``extra_ldflags()``, ``is_compatible(verbose=)``,
``load(verbose=)``, ``jit_load()``, ``builder()``.
"""
import importlib
import os
import sys
from pathlib import Path

import pytest

from accelops.op_builder import (Compatibility, CUDAOpBuilder, MissingCUDAException, OpBuilder, TorchCPUOpBuilder,
                                 compatible_ops, installed_cuda_version, probe_is_compatible)
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


class MyCudaBuilder(CUDAOpBuilder):
    NAME = "my_cuda"

    def sources(self):
        return []


def test_cuda_names(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(tmp_path / "no-cuda"))
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)  # restored after the test: the call writes it
    with pytest.raises(MissingCUDAException, match="my_op: no CUDA toolkit found"):
        installed_cuda_version("my_op")

    flags = MyCudaBuilder().compute_capability_args(cross_compile_archs="8.0;9.0")
    assert flags == ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    assert MyCudaBuilder().compute_capability_args(["8.6"]) == ["-gencode=arch=compute_86,code=sm_86"]


def test_installed_cuda_version_asks_torchs_extension_builder(monkeypatch, tmp_path):
    """DeepSpeed's meaning: the toolkit at torch.utils.cpp_extension.CUDA_HOME (what torch compiles with). None
    (a CPU-only torch), a runtime-only folder without bin/nvcc, or an nvcc that fails are MissingCUDAException,
    with the phrase DeepSpeed's callers match; a working nvcc gives (major, minor)."""
    import stat

    from torch.utils import cpp_extension

    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("CUDA_HOME", "/nowhere")  # the environment is not what decides
    for home in (None, str(tmp_path)):
        monkeypatch.setattr(cpp_extension, "CUDA_HOME", home)
        with pytest.raises(MissingCUDAException, match="no CUDA toolkit found.*unable to compile CUDA op"):
            installed_cuda_version()
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.4, V12.4.131'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    assert installed_cuda_version() == (12, 4)
    (tmp_path / "other").mkdir()  # a fresh path: nvcc's answers are cached per path
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(tmp_path / "other"))
    (tmp_path / "other" / "bin").mkdir()
    bad = tmp_path / "other" / "bin" / "nvcc"
    bad.write_text("#!/bin/sh\necho garbage\n")
    bad.chmod(bad.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(MissingCUDAException, match="my_op: cannot run .*unable to compile CUDA op"):
        installed_cuda_version("my_op")


def test_compute_capability_args_has_deepspeeds_meaning(monkeypatch):
    """TORCH_CUDA_ARCH_LIST overrides cross_compile_archs; arches come out sorted, once each (+PTX kept when
    any entry had it) and are written back to TORCH_CUDA_ARCH_LIST; enable_bf16 is False with a 7.x arch."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;7.5;8.0+PTX 7.5")
    builder = MyCudaBuilder()
    assert builder.compute_capability_args(cross_compile_archs="9.0") == [
        "-gencode=arch=compute_75,code=sm_75", "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_80,code=compute_80"]
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "7.5;8.0+PTX" and builder.enable_bf16 is False
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    assert builder.compute_capability_args("9.0;8.0;9.0") == ["-gencode=arch=compute_80,code=sm_80",
                                                              "-gencode=arch=compute_90,code=sm_90"]
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0" and builder.enable_bf16 is True


def test_compute_capability_args_in_jit_mode(monkeypatch):
    """jit_mode (DeepSpeed's attribute): the builder's _jit_arch_list, else TORCH_CUDA_ARCH_LIST, else the
    visible devices; +PTX on the newest; no flags returned (the build makes them)."""
    import torch

    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    builder = MyCudaBuilder()
    builder.jit_mode = True
    builder._jit_arch_list = "8.9 8.0"
    assert builder.compute_capability_args() == [] and os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;8.9+PTX"
    builder._jit_arch_list = None
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0+PTX;8.0")
    assert builder.compute_capability_args() == [] and os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0+PTX"

    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    caps = {0: (8, 9), 1: (7, 0), 2: (8, 9)}
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(caps))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: caps[i])
    assert builder.compute_capability_args() == [] and os.environ["TORCH_CUDA_ARCH_LIST"] == "7.0;8.9+PTX"
    assert builder.enable_bf16 is False

    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    caps.clear()
    with pytest.raises(RuntimeError, match="found no CUDA devices.*TORCH_CUDA_ARCH_LIST"):
        builder.compute_capability_args()
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: pytest.fail("probed in a forked child"))
    with pytest.raises(RuntimeError, match="forked child.*TORCH_CUDA_ARCH_LIST"):
        builder.compute_capability_args()


def test_load_leaves_torch_cuda_arch_list_as_it_was(monkeypatch, cache_dir):
    """A DeepSpeed-style builder's nvcc_args calls compute_capability_args, which rewrites TORCH_CUDA_ARCH_LIST;
    loading (here refused: not compatible) restores it, as DeepSpeed's JIT load does."""
    from accelops.op_builder import OpBuildError

    seen = []

    class DeepSpeedStyleCuda(MyCudaBuilder):
        def nvcc_args(self):
            flags = self.compute_capability_args()
            seen.append(os.environ["TORCH_CUDA_ARCH_LIST"])
            return flags

        def is_compatible(self, verbose=False):
            return Compatibility(["not on this test machine"])

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6 8.0")
    for load in (DeepSpeedStyleCuda().load, DeepSpeedStyleCuda().jit_load):
        with pytest.raises(OpBuildError, match="not on this test machine"):
            load(verbose=False)
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.6 8.0"
    assert seen == ["8.0;8.6", "8.0;8.6+PTX"]  # jit_load builds in jit_mode: +PTX on the newest, as DeepSpeed's


def test_cuda_capability_major_never_creates_a_cuda_context(monkeypatch):
    import torch

    def no_probe(i):
        raise AssertionError("must not create a CUDA context")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_probe)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert MyCudaBuilder().cuda_capability_major() is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    assert MyCudaBuilder().cuda_capability_major() is None
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("Props", (), {"major": 9})())
    assert MyCudaBuilder().cuda_capability_major() == 9


def test_probe_is_compatible_turns_a_failing_check_into_false(caplog):
    class Raising:
        NAME = "raising"

        def is_compatible(self, verbose=False):
            raise MissingCUDAException("no nvcc")

    class Answering:
        def __init__(self, answer):
            self.answer = answer

        def is_compatible(self, verbose=False):
            return self.answer

    assert probe_is_compatible(Raising()) is False
    assert "raising" in caplog.text and "no nvcc" in caplog.text
    for answer in (True, False):
        assert probe_is_compatible(Answering(answer)) is answer
    compat = probe_is_compatible(MyTinyBuilder())
    assert isinstance(compat, Compatibility) and compat and compat.reasons == []  # accelops' answer, with its reasons, passed through


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


def test_torch_info_has_deepspeeds_keys_and_sentinels(monkeypatch):
    """DeepSpeed's readers (its test utilities' bf16/CUDA checks, op version checks) index these keys and treat
    "0.0" as "none here"."""
    import torch

    from accelops import git_version_info

    monkeypatch.delattr(git_version_info, "torch_info", raising=False)  # computed again on access
    info = git_version_info.torch_info
    assert set(info) == {"version", "bf16_support", "cuda_version", "nccl_version", "hip_version"}
    assert info["version"] == ".".join(torch.__version__.split(".")[:2])
    assert isinstance(info["bf16_support"], bool)
    for key in ("cuda_version", "nccl_version", "hip_version"):
        major, minor = info[key].split(".")
        assert major.isdigit() and minor.isdigit(), (key, info[key])
    if not torch.version.cuda:
        assert info["cuda_version"] == info["nccl_version"] == "0.0" and info["bf16_support"] is False

    monkeypatch.delattr(git_version_info, "torch_info")
    monkeypatch.setattr(torch.version, "cuda", "12.4.131")
    monkeypatch.setattr(torch.version, "hip", "6.2.41133-dd7f95766")
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 21, 5))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # bf16 is not asked: no CUDA context made
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("would create a context"))
    info = git_version_info.torch_info
    assert (info["cuda_version"], info["hip_version"], info["bf16_support"]) == ("12.4", "6.2", False)
    assert info["nccl_version"] == ("0.0" if sys.platform == "win32" else "2.21")
    monkeypatch.delattr(git_version_info, "torch_info")  # not kept past this test


def test_builder_names_are_listed_by_dir():
    package = importlib.import_module("accelops.op_builder")
    names = dir(package)
    assert {"CPUAdamBuilder", "FusedAdamBuilder", "CPULionBuilder"} <= set(names)
    assert all(getattr(package, name) is not None for name in names if name.endswith("Builder"))
