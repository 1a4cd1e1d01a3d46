"""CPU instruction-set tiers: cheap run-time detection and the explicit compiler flags of each tier.

Tiers, best first: ``avx512`` (F, BW, VL, DQ + FMA + F16C), ``avx2`` (AVX2 + FMA + F16C), ``neon``
(aarch64) and ``scalar``. A build defines exactly one ``ACCELOPS_CPU_<TIER>`` macro and never targets the build
host's own CPU (no native-arch flag), so an object built for a tier runs on every CPU that has that tier.
Detection reads ``/proc/cpuinfo`` on Linux (no subprocess); elsewhere it asks py-cpuinfo once.
"""
from __future__ import annotations

import functools
import os
import platform
from typing import Dict, FrozenSet, List

TIERS = ("avx512", "avx2", "neon", "scalar")

#: CPU flags (as /proc/cpuinfo and py-cpuinfo spell them) each x86 tier needs.
_X86_REQUIRES: Dict[str, FrozenSet[str]] = {
    "avx512": frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma", "f16c"}),
    "avx2": frozenset({"avx2", "fma", "f16c"}),
}

_GCC_FLAGS: Dict[str, List[str]] = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "neon": [],  # baseline on aarch64
    "scalar": [],
}
# MSVC: /arch:AVX2 and /arch:AVX512 let the compiler use those instructions; intrinsics need no flag.
_MSVC_FLAGS: Dict[str, List[str]] = {"avx512": ["/arch:AVX512"], "avx2": ["/arch:AVX2"], "neon": [], "scalar": []}


def _is_x86(machine: str) -> bool:
    return machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _is_arm64(machine: str) -> bool:
    return machine.lower() in ("aarch64", "arm64")


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags, lower case."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:  # macOS / Windows: py-cpuinfo (may spawn a helper process; done once per process)
        import cpuinfo

        return frozenset(flag.lower() for flag in cpuinfo.get_cpu_info().get("flags", []))
    except Exception:
        return frozenset()


def supported_tiers(machine: str = "", flags: FrozenSet[str] = None) -> List[str]:
    """Every tier this CPU (or ``machine`` with ``flags``) can run, best first; always ends with scalar."""
    machine = machine or platform.machine()
    if _is_arm64(machine):
        return ["neon", "scalar"]
    if not _is_x86(machine):
        return ["scalar"]
    flags = _cpu_flags() if flags is None else flags
    return [tier for tier, needed in _X86_REQUIRES.items() if needed <= flags] + ["scalar"]


def detect_tier() -> str:
    """The best tier of this CPU; ``ACCELOPS_CPU_TIER=<tier>`` forces a (supported) one."""
    tiers = supported_tiers()
    forced = os.environ.get("ACCELOPS_CPU_TIER", "").strip().lower()
    if not forced:
        return tiers[0]
    if forced not in tiers:
        raise ValueError(f"ACCELOPS_CPU_TIER={forced!r} is not supported on this CPU; supported: {', '.join(tiers)}")
    return forced


def platform_tiers(machine: str = "") -> List[str]:
    """Every tier a CPU of this platform's architecture may need: what a prebuilt wheel must carry."""
    machine = machine or platform.machine()
    if _is_arm64(machine):
        return ["neon", "scalar"]
    if _is_x86(machine):
        return ["avx512", "avx2", "scalar"]
    return ["scalar"]


def tier_flags(tier: str, msvc: bool = False) -> List[str]:
    """Compiler flags for ``tier``: the instruction-set flags plus the ``ACCELOPS_CPU_<TIER>`` define."""
    if tier not in TIERS:
        raise ValueError(f"unknown CPU tier {tier!r}; known: {', '.join(TIERS)}")
    define = f"ACCELOPS_CPU_{tier.upper()}"
    if msvc:
        return _MSVC_FLAGS[tier] + [f"/D{define}"]
    return _GCC_FLAGS[tier] + [f"-D{define}"]


def exact_fp_flags(msvc: bool = False) -> List[str]:
    """Flags that keep floating point exactly as written (the kernels must round like torch's fp32 ops).

    gcc/clang: ``-ffp-contract=off`` (no implicit FMA contraction). MSVC: ``/fp:precise``, whose contraction is
    off by default from Visual Studio 2022 17.0; for older compilers ``cpu_simd.h`` also sets
    ``#pragma fp_contract(off)``. Fast-math is never enabled.
    """
    return ["/fp:precise"] if msvc else ["-ffp-contract=off"]


def openmp_flags(msvc: bool = False, darwin: bool = None) -> Dict[str, List[str]]:
    """OpenMP compile and link flags (``{"cflags": [...], "ldflags": [...]}``), linked explicitly.

    MSVC: ``/openmp``, the vcomp140 runtime of the Visual C++ redistributable that torch and Python already
    need; not ``/openmp:llvm``, whose libomp140 ships only with Visual Studio (a wheel built with it would not
    load on a user's machine). The kernels use only OpenMP 2.0 constructs (``parallel``, ``for`` with a signed
    index, ``omp_get_max_threads``/``omp_get_thread_num``), which vcomp supports.
    """
    darwin = platform.system() == "Darwin" if darwin is None else darwin
    if msvc:
        return {"cflags": ["/openmp"], "ldflags": []}
    if darwin:  # Apple clang: OpenMP from Homebrew's libomp
        return {"cflags": ["-Xpreprocessor", "-fopenmp"], "ldflags": ["-lomp"]}
    return {"cflags": ["-fopenmp"], "ldflags": ["-fopenmp"]}
