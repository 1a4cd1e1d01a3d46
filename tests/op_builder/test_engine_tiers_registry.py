"""CPU tiers and their flags, the op registry, and the CUDA checks (faked toolchains)."""
import subprocess
import sys

import pytest
import torch

from accelops.op_builder import ALL_OPS, CPUOpBuilder, CUDAOpBuilder, OpBuildError, cpu_tier, cuda_checks
from accelops.op_builder import get_builder_class

AMD_ZEN3 = frozenset("fpu sse2 avx avx2 fma f16c bmi2".split())
INTEL_SKX = frozenset("fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512cd".split())
AVX2_NO_F16C = frozenset("avx avx2 fma".split())


@pytest.mark.parametrize("flags, expected", [
    (AMD_ZEN3, ["avx2", "scalar"]),
    (INTEL_SKX, ["avx512", "avx2", "scalar"]),
    (AVX2_NO_F16C, ["scalar"]),
    (frozenset(), ["scalar"]),
])
def test_x86_tiers_from_flags(flags, expected):
    assert cpu_tier.supported_tiers("x86_64", flags) == expected
    assert cpu_tier.supported_tiers("AMD64", flags) == expected  # Windows spelling


def test_arm_and_other_tiers():
    assert cpu_tier.supported_tiers("aarch64", frozenset()) == ["neon", "scalar"]
    assert cpu_tier.supported_tiers("arm64", frozenset()) == ["neon", "scalar"]
    assert cpu_tier.supported_tiers("riscv64", frozenset()) == ["scalar"]
    assert cpu_tier.platform_tiers("x86_64") == ["avx512", "avx2", "scalar"]


def test_forced_tier(monkeypatch):
    monkeypatch.setenv("ACCELOPS_CPU_TIER", "scalar")
    assert cpu_tier.detect_tier() == "scalar"
    monkeypatch.setenv("ACCELOPS_CPU_TIER", "sse9")
    with pytest.raises(ValueError, match="not supported on this CPU; supported: .*scalar"):
        cpu_tier.detect_tier()


def test_gcc_tier_flags():
    assert cpu_tier.tier_flags("avx2") == ["-mavx2", "-mfma", "-mf16c", "-DACCELOPS_CPU_AVX2"]
    assert cpu_tier.tier_flags("avx512")[:4] == ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"]
    assert cpu_tier.tier_flags("scalar") == ["-DACCELOPS_CPU_SCALAR"]
    for tier in cpu_tier.TIERS:
        assert not any("native" in f for f in cpu_tier.tier_flags(tier))
    with pytest.raises(ValueError, match="unknown CPU tier"):
        cpu_tier.tier_flags("sse9")


def test_msvc_flag_set(monkeypatch):
    assert cpu_tier.tier_flags("avx2", msvc=True) == ["/arch:AVX2", "/DACCELOPS_CPU_AVX2"]
    assert cpu_tier.tier_flags("avx512", msvc=True) == ["/arch:AVX512", "/DACCELOPS_CPU_AVX512"]
    assert cpu_tier.tier_flags("scalar", msvc=True) == ["/DACCELOPS_CPU_SCALAR"]
    assert cpu_tier.openmp_flags(msvc=True) == {"cflags": ["/openmp"], "ldflags": []}
    from accelops.op_builder import toolchain

    monkeypatch.setattr(toolchain, "is_msvc", lambda: True)
    args = ALL_OPS["cpu_adam"]().build_args("avx2")
    assert args["cflags"][:1] == ["/O2"] and "/openmp" in args["cflags"] and "/arch:AVX2" in args["cflags"]
    assert "/fp:precise" in args["cflags"]  # MSVC's counterpart of -ffp-contract=off
    assert not any(f.startswith("-") for f in args["cflags"] + args["ldflags"])
    for tier in ("avx512", "scalar"):
        flags = ALL_OPS["cpu_layer_norm"]().build_args(tier)["cflags"]
        assert "/fp:precise" in flags and f"/DACCELOPS_CPU_{tier.upper()}" in flags


def test_gcc_build_args_link_openmp_without_debug_info():
    args = ALL_OPS["cpu_adam"]().build_args("avx2")
    assert "-fopenmp" in args["cflags"] and "-fopenmp" in args["ldflags"]
    assert "-g" not in args["cflags"] and "-O3" in args["cflags"]
    for name in ("cpu_adam", "cpu_adagrad", "cpu_lion", "cpu_layer_norm"):  # every CPU op: no FMA contraction
        assert "-ffp-contract=off" in ALL_OPS[name]().build_args("scalar")["cflags"]


def test_registry_and_unknown_names():
    assert {"cpu_adam", "cpu_adagrad", "cpu_lion", "cpu_layer_norm", "fused_adam", "fused_layer_norm"} <= set(ALL_OPS)
    assert issubclass(ALL_OPS["cpu_adam"], CPUOpBuilder) and issubclass(ALL_OPS["fused_adam"], CUDAOpBuilder)
    assert get_builder_class("CPUAdamBuilder") is ALL_OPS["cpu_adam"]
    assert get_builder_class("cpu_adam") is ALL_OPS["cpu_adam"]
    with pytest.raises(ValueError, match="unknown op builder 'NopeBuilder'; known: .*CPUAdamBuilder"):
        get_builder_class("NopeBuilder")


def test_accelerator_resolves_builders():
    from accelops.accelerator import get_accelerator

    acc = get_accelerator()
    assert acc.get_op_builder("CPUAdamBuilder") is ALL_OPS["cpu_adam"]
    assert isinstance(acc.create_op_builder("FusedAdamBuilder"), CUDAOpBuilder)
    with pytest.raises(ValueError, match="known: "):
        acc.create_op_builder("NopeBuilder")


def test_importing_the_engine_does_no_work():
    code = ("import sys, accelops.op_builder as ob; "
            "bad = [m for m in ('torch', 'cpuinfo', 'accelops.ops.cpu_adam.build') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------- CUDA checks
def test_cuda_op_on_cpu_only_torch(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    compat = ALL_OPS["fused_adam"]().is_compatible()
    assert not compat and any("CPU-only build" in r for r in compat.reasons)
    with pytest.raises(OpBuildError, match="CPU-only build"):
        ALL_OPS["fused_adam"]().load(verbose=False)


def _fake_cuda(monkeypatch, nvcc, torch_cuda):
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(cuda_checks, "nvcc_path", lambda: "/opt/fake/bin/nvcc")
    monkeypatch.setattr(cuda_checks, "nvcc_version", lambda path: nvcc)


def test_nvcc_major_mismatch_is_an_error(monkeypatch):
    _fake_cuda(monkeypatch, (12, 4), "13.0")
    compat = ALL_OPS["fused_adam"]().is_compatible()
    assert any("nvcc is CUDA 12.4 but torch was built with CUDA 13.0" in r for r in compat.reasons)
    monkeypatch.setenv("DS_SKIP_CUDA_CHECK", "1")
    assert not any("nvcc is CUDA" in r for r in ALL_OPS["fused_adam"]().is_compatible().reasons)


def test_nvcc_minor_mismatch_is_a_warning(monkeypatch):
    _fake_cuda(monkeypatch, (13, 1), "13.0")
    compat = ALL_OPS["fused_adam"]().is_compatible()
    assert not any("nvcc" in r for r in compat.reasons)
    assert any("nvcc is CUDA 13.1 but torch was built with CUDA 13.0" in w for w in compat.warnings)


def test_no_cuda_toolkit(monkeypatch):
    _fake_cuda(monkeypatch, (13, 0), "13.0")
    monkeypatch.setattr(cuda_checks, "nvcc_path", lambda: None)
    assert any("no CUDA toolkit" in r for r in ALL_OPS["fused_adam"]().is_compatible().reasons)


def test_arch_list_sources(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    assert cuda_checks.arch_list(None) == (["8.0", "9.0+PTX"], "TORCH_CUDA_ARCH_LIST")
    assert cuda_checks.gencode_flags(["8.0", "9.0+PTX"]) == [
        "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_90,code=compute_90"]
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cuda_checks, "nvcc_arches", lambda nvcc: ["7.5", "8.0", "8.6", "9.0", "12.0"])
    arches, source = cuda_checks.arch_list("/opt/fake/bin/nvcc")
    assert arches == ["7.5", "8.0", "8.6", "9.0", "12.0+PTX"] and "no visible device" in source
    with pytest.raises(ValueError, match="compute capability"):
        cuda_checks.gencode_flags(["Hopper"])
