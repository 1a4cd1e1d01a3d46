"""Op declarations: ``OpBuilder`` and its CPU and CUDA (also ROCm) flavours.

An op declares its sources, include folders and op-specific flags. Its flavour adds the engine's flags
(CPU tier + OpenMP, or the CUDA/HIP ones), says which variants exist and how a prebuilt module must match
this machine. ``build_args`` is the one function that makes the flags: builds use it and both keys hash
it, so a key cannot miss a flag. GPU arches are a property of the target machine, kept apart
(``arch_flags`` for builds, ``arch_key`` for the cache key). Loading is ``pipeline.load``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional

from . import cpu_tier, toolchain
from .deepspeed_api import (DeepSpeedBuilderAPI, MissingCUDAException, cross_compile_arches, installed_cuda_version,
                            probe_is_compatible)
from .errors import Compatibility, OpBuildError
from .includes import included_files

CSRC = Path(__file__).resolve().parent.parent / "csrc"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def major_version(version: Optional[str]) -> Optional[str]:
    """``"12"`` of ``"12.8"``; None stays None."""
    return None if not version else str(version).split(".")[0]


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (keys stay the same wherever the tree is), else absolute."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def stable_abi_flags(msvc: bool) -> List[str]:
    """The define that limits a build to torch's stable ABI headers: any other torch, ATen or c10 header is then
    a compile error, so the library keeps loading under later torch releases."""
    return ["/DTORCH_STABLE_ONLY" if msvc else "-DTORCH_STABLE_ONLY"]


def _strip_flags() -> List[str]:
    """Linker flags that leave out the static symbol table (the exported ones stay): smaller objects."""
    return ["-s"] if sys.platform.startswith("linux") else []


class OpBuilder(DeepSpeedBuilderAPI):
    """Base of every op builder: a plain C++ op (``-O3``, exact floating point); ops subclass ``CPUOpBuilder``
    (adds CPU tiers and OpenMP) or ``CUDAOpBuilder``.

    Subclasses set ``NAME`` (``DS_BUILD_<NAME>``, also ``BUILD_VAR``, selects it for prebuilds) and implement
    ``sources()``; ``include_paths()``, ``cxx_args()``, ``msvc_args()``, ``extra_ldflags()`` and
    ``extra_requirements()`` are optional. DeepSpeed's builder API works too (``deepspeed_api``).
    """

    NAME: str = ""
    KIND: str = "cpu"  # "cpu" or "cuda": a label for reports; behaviour lives in the flavours' methods
    #: What the op's front end runs where this op cannot load (ds_report shows it), or "" when nothing does.
    TORCH_PATH: str = ""

    def __init__(self, name: Optional[str] = None, accelerator_name: Optional[str] = None) -> None:
        """``name`` is DeepSpeed's ``super().__init__(name=self.NAME)``; it must match ``NAME`` when both are
        set. ``accelerator_name`` is what ``get_accelerator().create_op_builder`` passes."""
        if name and self.NAME and name != self.NAME:
            raise ValueError(f"{type(self).__name__}: name={name!r} differs from its NAME {self.NAME!r}")
        if name and not self.NAME:
            self.NAME = name
        if not self.NAME:
            raise TypeError(f"{type(self).__name__} is not an op builder (no NAME); use a subclass")
        self.name = self.NAME
        self.accelerator_name = accelerator_name

    # ------------------------------------------------------------------ declared by ops
    def sources(self) -> List[str]:
        """Source files, relative to ``csrc()``."""
        raise NotImplementedError

    def include_paths(self) -> List[str]:
        """Header folders, relative to ``csrc()``."""
        return []

    def cxx_args(self) -> List[str]:
        """Op-specific extra host-compiler flags for gcc/clang."""
        return []

    def msvc_args(self) -> List[str]:
        """Op-specific extra host-compiler flags for MSVC (used instead of ``cxx_args`` on Windows)."""
        return []

    def extra_requirements(self) -> List[str]:
        """Op-specific reasons the op cannot be built here (e.g. a missing library); empty when fine."""
        return []

    def csrc(self) -> Path:
        """The folder ``sources()`` and ``include_paths()`` are relative to."""
        return CSRC

    # ------------------------------------------------------------------ flavour (plain C++, CPU or CUDA)
    def variant(self) -> str:
        """What a build on this machine is specialised for: the CPU tier, ``cuda``/``hip``; ``host`` for a plain
        C++ op."""
        return "host"

    def build_args(self, variant: str) -> Dict[str, List[str]]:
        """Flags of one build: ``cflags``, ``cuda_cflags`` and ``ldflags`` (engine + op flags, no GPU arches)."""
        msvc = toolchain.is_msvc()
        return {"cflags": ["/O2" if msvc else "-O3"] + stable_abi_flags(msvc) + cpu_tier.exact_fp_flags(msvc)
                + self.host_args(), "cuda_cflags": [], "ldflags": self.link_args()}

    def link_args(self) -> List[str]:
        """The engine's linker flags plus ``extra_ldflags()``."""
        return ([] if toolchain.is_msvc() else _strip_flags()) + self.extra_ldflags()

    def arch_flags(self, variant: str) -> List[str]:
        """GPU arch flags of a build on this machine (may run nvcc); none for CPU ops."""
        return []

    def arch_key(self, variant: str) -> str:
        """What ``arch_flags`` would resolve from, without running anything (part of the cache key)."""
        return ""

    def uses_cuda(self) -> bool:
        """Whether the build compiles ``.cu`` sources (torch's ``with_cuda``)."""
        return False

    def prebuild_variants(self, cpu_tiers: List[str]) -> List[str]:
        """The variants a prebuild makes: every tier of ``cpu_tiers`` for CPU ops, this machine's for GPU ops."""
        return [self.variant()]

    def prebuilt_candidates(self) -> List[str]:
        """Installed variants this machine may load, best first."""
        return [self.variant()]

    def prebuilt_mismatch(self, info: dict) -> Optional[str]:
        """Why a prebuild recorded in ``info`` (``build_info.json``) cannot load here, beyond the ABI floor; None
        when it can."""
        return None

    def setuptools_extension(self, module: str, variant: str, csrc_rel: str):
        """The setuptools extension that prebuilds ``variant`` as ``module``; paths relative to setup.py."""
        from torch.utils.cpp_extension import CppExtension

        return CppExtension(**self._extension_kwargs(module, variant, csrc_rel))

    def _extension_kwargs(self, module: str, variant: str, csrc_rel: str) -> dict:
        args = self.build_args(variant)
        return dict(name=module, sources=[os.path.join(csrc_rel, s) for s in self.sources()],
                    include_dirs=[os.path.abspath(os.path.join(csrc_rel, p)) for p in self.include_paths()],
                    extra_compile_args={"cxx": args["cflags"]}, extra_link_args=args["ldflags"],
                    py_limited_api=True)  # a stable-ABI library: torch links no libtorch_python into it

    # ------------------------------------------------------------------ flags and keys
    def host_args(self) -> List[str]:
        """The op's host-compiler flags for the compiler in use."""
        return self.msvc_args() if toolchain.is_msvc() else self.cxx_args()

    def module_name(self, variant: str, key: str = "") -> str:
        """``accelops_<op>_<variant>[_<key prefix>]``: also the ``TORCH_EXTENSION_NAME``."""
        return f"accelops_{self.NAME}_{variant}" + (f"_{key[:16]}" if key else "")

    def source_key(self, variant: Optional[str] = None) -> str:
        """sha256 of what a build is made from: the sources and the headers they include (transitively, see
        ``includes``: a header no source of this op includes does not change its key), include folders and
        ``build_args``.

        Recorded for each prebuilt module; a prebuilt module whose key differs from the installed tree's
        (an edited source after an editable prebuild) is not used.
        """
        variant = variant or self.variant()
        root = self.csrc()
        missing = [str(p) for p in (root / s for s in self.sources()) if not p.is_file()]
        if missing:
            raise OpBuildError(f"accelops: op {self.NAME}: source files not found: {', '.join(missing)}")
        return _digest({
            "op": self.NAME,
            "variant": variant,
            "files": [(_shown(p, root), _file_digest(p)) for p in included_files(
                [root / s for s in self.sources()], [root / p for p in self.include_paths()])],
            "include_paths": self.include_paths(),
            "args": self.build_args(variant),
        })

    def toolchain_identity(self) -> Dict[str, str]:
        """Compiler identities that go into the cache key (no subprocess). The compiler is looked up on PATH only:
        on Windows outside a developer prompt that is "missing" (activating Visual Studio takes seconds, too slow
        for every warm load; MSVC 2015-2022 share one ABI)."""
        return {"cxx": toolchain.tool_identity(shutil.which(toolchain.compiler_executable())),
                "cxx_command": toolchain.compiler_command()}

    def cache_key(self, variant: Optional[str] = None) -> str:
        """sha256 of the source key, GPU arch inputs, the GPU runtime (CUDA/HIP major, GPU ops only), compilers
        and platform: one JIT cache entry per key. Not the torch release or the Python: the library binds
        through torch's stable ABI and serves every torch from its ABI floor on (recorded in the entry's
        manifest and checked on load); a CPU op built under the CPU build of torch is reused under its CUDA
        build."""
        variant = variant or self.variant()
        return _digest({
            "source": self.source_key(variant),
            "builder": f"{type(self).__module__}.{type(self).__qualname__}",
            "arches": self.arch_key(variant),
            "runtime": self.runtime_key(),
            "toolchain": self.toolchain_identity(),
            "platform": f"{sys.platform}-{platform.machine()}",
        })

    def runtime_key(self) -> Dict[str, Optional[str]]:
        """The GPU runtime a build depends on (part of the cache key): nothing for host and CPU ops."""
        return {}

    # ------------------------------------------------------------------ compatibility
    def _common_reasons(self) -> List[str]:
        reasons = []
        problem = toolchain.compiler_problem()
        if problem:
            reasons.append(problem)
        if shutil.which("ninja") is None:
            reasons.append("ninja is not installed (`pip install ninja`); torch's extension builder needs it")
        return reasons + self.extra_requirements()

    def flavour_reasons(self) -> Compatibility:
        """The flavour's own reasons and warnings (a CUDA toolkit that fits torch, ...)."""
        return Compatibility()

    def is_compatible(self, verbose: bool = False) -> Compatibility:
        """Whether the op can be built here, with the reasons when not. Runs the C++ compiler once per process
        (``--version``) and, for CUDA ops, nvcc. With ``verbose`` the reasons are logged."""
        flavour = self.flavour_reasons()
        compat = Compatibility(flavour.reasons + self._common_reasons(), flavour.warnings)
        if verbose and not compat:
            from .messages import log

            log.warning("accelops: op %s is not compatible: %s", self.NAME, "; ".join(compat.reasons))
        return compat

    # ------------------------------------------------------------------ loading (see pipeline.py)
    def load(self, verbose: bool = True) -> ModuleType:
        """The op's extension module: prebuilt -> JIT cache -> JIT build; ``OpBuildError`` with the cause.

        May compile (minutes for CUDA ops), logging one progress line while it does.
        """
        from . import pipeline

        return pipeline.load(self, verbose).module

    def load_with_origin(self, verbose: bool = True):
        """``pipeline.Loaded``: the module plus where it came from (``prebuilt``, ``cache``, ``build``) and its
        variant."""
        from . import pipeline

        return pipeline.load(self, verbose)

    def cache_entry(self):
        """``(folder, problem)`` of this machine's JIT cache entry; ``problem`` is None when an intact object is
        there, else why not. Compiles nothing."""
        from . import pipeline

        return pipeline.cache_entry(self)


class CPUOpBuilder(OpBuilder):
    """A C++ op for the host CPU: the engine adds ``-O3``, the CPU-tier flags, exact floating point (no FMA
    contraction) and OpenMP (MSVC: ``/O2``, ``/arch:``, ``/fp:precise``, ``/openmp``)."""

    KIND = "cpu"

    def variant(self) -> str:
        return cpu_tier.detect_tier()

    def build_args(self, variant: str) -> Dict[str, List[str]]:
        msvc = toolchain.is_msvc()
        omp = cpu_tier.openmp_flags(msvc=msvc)
        optimise = ["/O2"] if msvc else ["-O3"]
        return {
            "cflags": optimise + stable_abi_flags(msvc) + cpu_tier.tier_flags(variant, msvc=msvc)
            + cpu_tier.exact_fp_flags(msvc) + omp["cflags"] + self.host_args(),
            "cuda_cflags": [],
            "ldflags": omp["ldflags"] + self.link_args(),
        }

    def prebuild_variants(self, cpu_tiers: List[str]) -> List[str]:
        return list(cpu_tiers)

    def prebuilt_candidates(self) -> List[str]:
        """A forced ``ACCELOPS_CPU_TIER`` only, else every tier this CPU runs, best first."""
        if os.environ.get("ACCELOPS_CPU_TIER", "").strip():
            return [self.variant()]
        return cpu_tier.supported_tiers()


class CUDAOpBuilder(OpBuilder):
    """A C++ + CUDA op; on a ROCm build of torch the sources go through torch's hipify."""

    KIND = "cuda"

    def nvcc_args(self) -> List[str]:
        """Op-specific extra nvcc flags."""
        return []

    def hipcc_args(self) -> List[str]:
        """Op-specific extra hipcc flags (ROCm builds use these instead of ``nvcc_args``)."""
        return []

    def variant(self) -> str:
        import torch

        return "hip" if torch.version.hip else "cuda"

    def uses_cuda(self) -> bool:
        return True

    def build_args(self, variant: str) -> Dict[str, List[str]]:
        device = self.hipcc_args() if variant == "hip" else self.nvcc_args()
        msvc = toolchain.is_msvc()
        return {"cflags": ["/O2" if msvc else "-O3"] + stable_abi_flags(msvc) + self.host_args(),
                "cuda_cflags": ["-O3"] + stable_abi_flags(False) + device, "ldflags": self.link_args()}

    def arch_flags(self, variant: str) -> List[str]:
        """nvcc ``-gencode`` flags (runs nvcc for its defaults); none on ROCm, where torch passes
        ``PYTORCH_ROCM_ARCH`` itself."""
        from . import cuda_checks

        if variant == "hip":
            return []
        arches, _ = cuda_checks.arch_list(cuda_checks.nvcc_path())
        return cuda_checks.gencode_flags(arches)

    #: DeepSpeed's attribute, False when an arch that ``compute_capability_args`` chose is 7.x or older.
    enable_bf16 = True

    def compute_capability_args(self, cross_compile_archs=None) -> List[str]:
        """DeepSpeed's nvcc arch flags, with DeepSpeed's meaning.

        The arches: ``TORCH_CUDA_ARCH_LIST`` (``;``/space separated; it overrides ``cross_compile_archs``, with a
        warning), else ``cross_compile_archs`` (``"8.0;9.0"`` or a list), else the visible devices or nvcc's
        defaults (none on ROCm, where ``PYTORCH_ROCM_ARCH`` decides). With ``jit_mode`` set (DeepSpeed's
        attribute): the builder's ``_jit_arch_list``, else ``TORCH_CUDA_ARCH_LIST``, else the visible devices
        (a ``RuntimeError`` naming ``TORCH_CUDA_ARCH_LIST`` inside a forked child where CUDA was initialised, or
        when no device is visible), ``+PTX`` on the newest unless one has it.

        The list is sorted and each arch kept once (``+PTX`` if any entry for it had it), written back to
        ``TORCH_CUDA_ARCH_LIST`` as DeepSpeed does, and sets ``enable_bf16``. Returns the ``-gencode`` flags, or
        ``[]`` in ``jit_mode`` (the build then makes them)."""
        from . import cuda_checks

        configured = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
        if self.jit_mode:
            arches = cross_compile_arches(getattr(self, "_jit_arch_list", None) or configured or None)
            arches = cuda_checks.canonical_arches(arches or self._visible_arches())
            if not any(a.endswith("+PTX") for a in arches):
                arches[-1] += "+PTX"
        elif configured:
            if cross_compile_archs is not None:
                from .messages import log

                log.warning("accelops: %s: TORCH_CUDA_ARCH_LIST=%s overrides cross_compile_archs=%s", self.NAME,
                            configured, cross_compile_archs)
            arches = cross_compile_arches(configured)
        elif cross_compile_archs is not None:
            arches = cross_compile_arches(cross_compile_archs)
        elif self.variant() == "hip":
            return []
        else:
            arches = cuda_checks.arch_list(cuda_checks.nvcc_path())[0]
        arches = cuda_checks.canonical_arches(arches)
        if not arches:
            raise RuntimeError(f"accelops: {self.NAME}: no compute capability to build for")
        self.enable_bf16 = all(int(a.split(".")[0]) > 7 for a in arches)
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(arches)
        return [] if self.jit_mode else cuda_checks.gencode_flags(arches)

    def _visible_arches(self) -> List[str]:
        """Compute capabilities of the visible devices, for ``jit_mode`` without an arch list."""
        import torch

        bad_fork = getattr(torch.cuda, "_is_in_bad_fork", None)
        if bad_fork is not None and bad_fork():
            raise RuntimeError(f"accelops: {self.NAME}: cannot probe the CUDA devices' compute capabilities in a forked "
                               f"child of a process that initialised CUDA; set TORCH_CUDA_ARCH_LIST (e.g. 8.0;9.0)")
        caps = []
        for i in range(torch.cuda.device_count()):
            cap = "%d.%d" % torch.cuda.get_device_capability(i)
            caps += [cap] if cap not in caps else []
        if not caps:
            raise RuntimeError(f"accelops: {self.NAME}: found no CUDA devices to build for; set TORCH_CUDA_ARCH_LIST "
                               f"(e.g. 8.0;9.0) or make GPUs visible")
        return caps

    def cuda_capability_major(self) -> Optional[int]:
        """DeepSpeed's: the compute-capability major of CUDA device 0, or None when reading it would create a
        CUDA context (none exists yet, which keeps ``fork()`` usable) or cannot work (a forked child)."""
        import torch

        if not torch.cuda.is_initialized():
            return None
        bad_fork = getattr(torch.cuda, "_is_in_bad_fork", None)
        if bad_fork is not None and bad_fork():
            return None
        return torch.cuda.get_device_properties(0).major

    def arch_key(self, variant: str) -> str:
        """``TORCH_CUDA_ARCH_LIST``, the visible devices, or nvcc's defaults (then nvcc's identity in the key
        decides); ``PYTORCH_ROCM_ARCH`` on ROCm. Runs nothing, so a warm load runs no nvcc."""
        from . import cuda_checks

        if variant == "hip":
            return "PYTORCH_ROCM_ARCH=" + os.environ.get("PYTORCH_ROCM_ARCH", "")
        return cuda_checks.arch_inputs()

    def toolchain_identity(self) -> Dict[str, str]:
        from . import cuda_checks

        return {**super().toolchain_identity(), "nvcc": toolchain.tool_identity(cuda_checks.nvcc_path())}

    def runtime_key(self) -> Dict[str, Optional[str]]:
        """The CUDA/HIP major of torch: a GPU op's library links the runtime of that major."""
        import torch

        return {"cuda": major_version(torch.version.cuda), "hip": major_version(torch.version.hip)}

    def prebuild_variants(self, cpu_tiers: List[str]) -> List[str]:
        return [self.variant()]

    def prebuilt_mismatch(self, info: dict) -> Optional[str]:
        """A GPU op needs a CUDA/HIP build of torch of the major version it was built with, and the accelerator
        it was built for."""
        import torch

        from .prebuilt import accelerator_name

        for what, built, here in (("CUDA major", major_version(info.get("cuda")), major_version(torch.version.cuda)),
                                  ("HIP major", major_version(info.get("hip")), major_version(torch.version.hip)),
                                  ("accelerator", info.get("accelerator"), accelerator_name(self))):
            if built != here:
                return f"built for {what} {built}, this machine has {here}"
        return None

    def setuptools_extension(self, module: str, variant: str, csrc_rel: str):
        from torch.utils.cpp_extension import CUDAExtension

        kwargs = self._extension_kwargs(module, variant, csrc_rel)
        kwargs["extra_compile_args"]["nvcc"] = self.arch_flags(variant) + self.build_args(variant)["cuda_cflags"]
        return CUDAExtension(**kwargs)

    def flavour_reasons(self) -> Compatibility:
        import torch

        from . import cuda_checks

        reasons, warnings = [], []
        if not torch.version.cuda and not torch.version.hip:
            reasons.append(f"torch {torch.__version__} is a CPU-only build; a CUDA op needs a CUDA (or ROCm) build "
                           f"of torch")
        elif torch.version.cuda:
            nvcc = cuda_checks.nvcc_path()
            if nvcc is None:
                reasons.append(f"no CUDA toolkit: nvcc not found (CUDA_HOME={cuda_checks.cuda_home()!r}); install "
                               f"the CUDA {torch.version.cuda} toolkit and set CUDA_HOME to its folder")
            else:
                error, warning = cuda_checks.version_mismatch(cuda_checks.nvcc_version(nvcc), torch.version.cuda)
                reasons += [error] if error else []
                warnings += [warning] if warning else []
        return Compatibility(reasons, warnings)


#: DeepSpeed's name of the CPU flavour (its CPU ops derive from ``TorchCPUOpBuilder``).
TorchCPUOpBuilder = CPUOpBuilder

__all__ = ["CPUOpBuilder", "CUDAOpBuilder", "MissingCUDAException", "OpBuilder", "TorchCPUOpBuilder",
           "installed_cuda_version", "probe_is_compatible"]
