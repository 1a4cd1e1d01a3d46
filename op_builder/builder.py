"""The build engine: ``OpBuilder`` and its CPU and CUDA (also ROCm) flavours.

An op file declares sources, include folders and op-specific flags; the engine adds the CPU-tier or
CUDA arch flags and loads the op in a fixed order:

1. a prebuilt module from the wheel (``accelops/build_info.json``), only when its recorded torch
   major.minor, accelerator, CUDA/HIP version, Python and CPU tier match this machine;
2. a JIT cache hit: the shared object is imported directly (no ninja, no compiler, no subprocess);
3. a JIT build under the cache key's lock, in a temporary folder published by atomic rename;
4. ``OpBuildError`` naming the cause (incompatibility reasons, or the compiler output's tail + log path).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterable, List, Optional, Tuple

from . import cpu_tier, jit_cache
from .progress import Progress

CSRC = Path(__file__).resolve().parent.parent / "csrc"
HEADER_SUFFIXES = (".h", ".hpp", ".cuh", ".inc")
LOG_TAIL_LINES = 40

#: Modules loaded in this process, by module name (one key -> one import per process).
_loaded: Dict[str, ModuleType] = {}


class OpBuildError(RuntimeError):
    """An op could not be loaded: not compatible, failed to compile, or failed to import."""


class Compatibility:
    """Truthy when the op can be built here; ``reasons`` says why not, ``warnings`` what to watch."""

    def __init__(self, reasons: Iterable[str] = (), warnings: Iterable[str] = ()) -> None:
        self.reasons: List[str] = list(reasons)
        self.warnings: List[str] = list(warnings)

    def __bool__(self) -> bool:
        return not self.reasons

    def __repr__(self) -> str:
        return f"Compatibility(ok={bool(self)}, reasons={self.reasons!r}, warnings={self.warnings!r})"


def _is_msvc() -> bool:
    return os.name == "nt"


def compiler_command() -> str:
    """The host compiler torch's extension builder uses: ``$CXX``, else ``c++`` (``cl`` on Windows).

    May hold arguments (``ccache g++``); ``compiler_executable()`` is its first word.
    """
    return os.environ.get("CXX") or ("cl" if _is_msvc() else "c++")


def compiler_executable() -> str:
    """The program of ``compiler_command()`` (``ccache`` for ``CXX="ccache g++"``)."""
    return compiler_words()[0]


@functools.lru_cache(maxsize=None)
def probe_version(command: Tuple[str, ...]) -> Tuple[Optional[str], str]:
    """``(problem, output)`` of running ``command + ("--version",)`` once per process: ``problem`` is None
    when it ran and exited 0, else why not. Used for the C++ compiler here and by ds_report's tool rows."""
    shown = " ".join(command)
    try:
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, errors="replace",
                                timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`{shown} --version` failed: {exc}", ""
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        return f"`{shown} --version` exited {result.returncode}", output
    return None, output


def compiler_words() -> Tuple[str, ...]:
    """``compiler_command()`` split into words (``("ccache", "g++")``)."""
    return tuple(shlex.split(compiler_command(), posix=os.name != "nt")) or (compiler_command(),)


def _tool_identity(path: Optional[str]) -> str:
    """Cheap identity of an executable (resolved path, size, mtime): no subprocess."""
    if not path:
        return "missing"
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return f"{real}:unreadable"
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version() -> str:
    from accelops.version import __version__

    return __version__


class OpBuilder:
    """Base of every op builder; op files subclass ``CPUOpBuilder`` or ``CUDAOpBuilder``.

    Subclasses set ``NAME`` (``DS_BUILD_<NAME>`` selects it for prebuilds) and implement ``sources()``;
    ``include_paths()``, ``cxx_args()`` and ``extra_requirements()`` are optional.
    """

    NAME: str = ""
    KIND: str = ""  # "cpu" or "cuda", set by the flavours

    def __init__(self, accelerator_name: Optional[str] = None) -> None:
        if not self.NAME:
            raise TypeError(f"{type(self).__name__} is not an op builder (no NAME); use a subclass")
        self.accelerator_name = accelerator_name

    # ------------------------------------------------------------------ declared by op files
    def sources(self) -> List[str]:
        """Source files, relative to ``csrc/``."""
        raise NotImplementedError

    def include_paths(self) -> List[str]:
        """Header folders, relative to ``csrc/``."""
        return []

    def cxx_args(self) -> List[str]:
        """Op-specific extra host-compiler flags for gcc/clang."""
        return []

    def msvc_args(self) -> List[str]:
        """Op-specific extra host-compiler flags for MSVC (used instead of ``cxx_args`` on Windows)."""
        return []

    def host_args(self) -> List[str]:
        """The op's host-compiler flags for the compiler in use."""
        return self.msvc_args() if _is_msvc() else self.cxx_args()

    def extra_requirements(self) -> List[str]:
        """Op-specific reasons the op cannot be built here (e.g. a missing library); empty when fine."""
        return []

    # ------------------------------------------------------------------ engine
    def csrc(self) -> Path:
        return CSRC

    def variant(self) -> str:
        """What the object is specialised for: the CPU tier, or ``cuda``/``hip``."""
        raise NotImplementedError

    def build_args(self, variant: str) -> Dict[str, List[str]]:
        """Flags for one build: ``cflags``, ``cuda_cflags`` and ``ldflags`` (engine + op flags)."""
        raise NotImplementedError

    def key_args(self, variant: str) -> Dict[str, object]:
        """What the cache key hashes of the build flags (all of ``build_args`` unless a flavour says less)."""
        return self.build_args(variant)

    def module_name(self, variant: str, key: str = "") -> str:
        """``accelops_<op>_<variant>[_<key prefix>]``: also the ``TORCH_EXTENSION_NAME``."""
        return f"accelops_{self.NAME}_{variant}" + (f"_{key[:16]}" if key else "")

    def _hashed_files(self) -> List[Path]:
        """Sources plus every header in the include folders and next to the sources."""
        root = self.csrc()
        files = {root / s for s in self.sources()}
        folders = {root / p for p in self.include_paths()} | {f.parent for f in files}
        for folder in folders:
            if folder.is_dir():
                files.update(p for p in folder.rglob("*") if p.suffix in HEADER_SUFFIXES)
        return sorted(files)

    def toolchain_identity(self) -> Dict[str, str]:
        """Compiler identities that go into the cache key (no subprocess)."""
        return {"cxx": _tool_identity(shutil.which(compiler_executable())), "cxx_command": compiler_command()}

    def cache_key(self, variant: Optional[str] = None) -> str:
        """sha256 over sources and headers, flags, torch/CUDA/HIP versions, compilers, tier, Python, accelops."""
        import torch

        variant = variant or self.variant()
        root = self.csrc()
        missing = [str(p) for p in (root / s for s in self.sources()) if not p.is_file()]
        if missing:
            raise OpBuildError(f"accelops: op {self.NAME}: source files not found: {', '.join(missing)}")
        payload = {
            "op": self.NAME,
            "builder": f"{type(self).__module__}.{type(self).__qualname__}",
            "accelops": _version(),
            "files": [(str(p.relative_to(root)), _file_digest(p)) for p in self._hashed_files()],
            "include_paths": self.include_paths(),
            "args": self.key_args(variant),
            "variant": variant,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "hip": torch.version.hip,
            "toolchain": self.toolchain_identity(),
            "python": sys.implementation.cache_tag,
            "platform": f"{sys.platform}-{platform.machine()}",
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def cache_entry(self) -> Tuple[Path, Optional[str]]:
        """``(folder, problem)`` of this machine's JIT cache entry for the op; ``problem`` is None when an
        intact object is there, else why not (``"not built"``, truncated, ...). Compiles nothing."""
        variant = self.variant()
        name = self.module_name(variant, self.cache_key(variant))
        folder = jit_cache.cache_root(create=False) / name
        return folder, jit_cache.verified_object(folder, name)

    # ------------------------------------------------------------------ compatibility
    def _common_reasons(self) -> List[str]:
        reasons = []
        compiler = compiler_executable()
        if shutil.which(compiler) is None:
            reasons.append(f"no C++ compiler: `{compiler}` (from CXX or the default) is not on PATH; install one "
                           f"(e.g. g++) or set CXX to its path")
        elif not _is_msvc():  # cl has no --version
            problem, _ = probe_version(compiler_words())
            if problem:
                reasons.append(f"the C++ compiler does not run: {problem}; fix it or set CXX to a working one")
        if shutil.which("ninja") is None:
            reasons.append("ninja is not installed (`pip install ninja`); torch's extension builder needs it")
        return reasons + self.extra_requirements()

    def is_compatible(self, verbose: bool = False) -> Compatibility:
        """Whether the op can be built here, with the reasons when not. Runs the C++ compiler once per process
        (``--version``) and, for CUDA ops, nvcc."""
        raise NotImplementedError

    # ------------------------------------------------------------------ loading
    def load(self, verbose: bool = True) -> ModuleType:
        """The op's extension module: prebuilt -> JIT cache -> JIT build; ``OpBuildError`` with the cause.

        May compile (minutes for CUDA ops), printing one progress line to stderr while it does.
        """
        from . import prebuilt

        module, skipped = prebuilt.load_prebuilt(self)
        if module is not None:
            return module
        if skipped and verbose:
            print(f"accelops: {self.NAME}: prebuilt module not used: {skipped}", file=sys.stderr)
        variant = self.variant()
        name = self.module_name(variant, self.cache_key(variant))
        if name in _loaded:
            return _loaded[name]
        root = jit_cache.cache_root()
        entry = root / name
        if jit_cache.verified_object(entry, name) is None:  # warm hit: import the object directly
            return self._import(entry, name)
        compat = self.is_compatible(verbose=verbose)
        if not compat:
            note = f" (prebuilt module skipped: {skipped})" if skipped else ""
            raise OpBuildError(f"accelops: cannot build op {self.NAME}: {'; '.join(compat.reasons)}{note}")
        for warning in compat.warnings:
            print(f"accelops: {self.NAME}: {warning}", file=sys.stderr)
        what = f"op {self.NAME} ({variant})"
        with jit_cache.build_lock(root, name, what):
            problem = jit_cache.verified_object(entry, name)
            if problem is None:  # another process built it while we waited
                return self._import(entry, name)
            if entry.exists():  # unusable: corrupt, truncated, or a folder without a manifest
                print(f"accelops: rebuilding {what}: cached object unusable ({problem})", file=sys.stderr)
                jit_cache.discard_entry(root, name)
            jit_cache.remove_leftovers(root, name)
            build_dir = jit_cache.new_build_dir(root, name)
            try:
                with Progress(f"accelops: building {what}"):
                    module = self._compile(build_dir, variant, name, verbose, root)
                jit_cache.write_manifest(build_dir, name, {"op": self.NAME, "variant": variant})
                jit_cache.publish(build_dir, root, name)
            except BaseException:
                shutil.rmtree(build_dir, ignore_errors=True)
                raise
        module.__file__ = str(entry / f"{name}{jit_cache.EXT}")  # same inode, renamed with its folder
        _loaded[name] = module
        return module

    def _import(self, folder: Path, name: str) -> ModuleType:
        try:
            module = jit_cache.import_object(folder, name)
        except ImportError as exc:
            raise OpBuildError(f"accelops: op {self.NAME}: cannot import {folder / name}{jit_cache.EXT}: {exc}. "
                               f"Delete that folder to force a rebuild") from exc
        _loaded[name] = module
        return module

    def _compile(self, build_dir: Path, variant: str, name: str, verbose: bool, root: Path) -> ModuleType:
        """Compile a private copy of csrc/ into ``build_dir/<name><ext>`` and import it."""
        from torch.utils.cpp_extension import load as torch_load

        src = build_dir / "src"
        shutil.copytree(self.csrc(), src)  # hermetic; hipify writes next to these copies, not the package
        work = build_dir / "build"
        work.mkdir()
        args = self.build_args(variant)
        try:
            module = torch_load(
                name=name,
                sources=[str(src / s) for s in self.sources()],
                extra_cflags=args["cflags"],
                extra_cuda_cflags=args["cuda_cflags"] or None,
                extra_ldflags=args["ldflags"],
                extra_include_paths=[str(src / p) for p in self.include_paths()],
                build_directory=str(work),
                verbose=verbose,
                with_cuda=self.KIND == "cuda",
            )
        except Exception as exc:
            raise self._compile_error(exc, root, name) from None
        os.replace(work / f"{name}{jit_cache.EXT}", build_dir / f"{name}{jit_cache.EXT}")
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        return module

    def _compile_error(self, exc: Exception, root: Path, name: str) -> OpBuildError:
        logs = root / "logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        log = logs / f"{name}.log"
        text = str(exc)
        log.write_text(text)
        tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
        return OpBuildError(f"accelops: building op {self.NAME} failed; compiler output (tail):\n{tail}\n"
                            f"full log: {log}")


class CPUOpBuilder(OpBuilder):
    """A C++ op for the host CPU: the engine adds the CPU-tier flags, ``-O3`` and OpenMP."""

    KIND = "cpu"

    def variant(self) -> str:
        return cpu_tier.detect_tier()

    def build_args(self, variant: str) -> Dict[str, List[str]]:
        msvc = _is_msvc()
        omp = cpu_tier.openmp_flags(msvc=msvc)
        optimise = ["/O2"] if msvc else ["-O3"]
        return {
            "cflags": optimise + cpu_tier.tier_flags(variant, msvc=msvc) + omp["cflags"] + self.host_args(),
            "cuda_cflags": [],
            "ldflags": omp["ldflags"],
        }

    def is_compatible(self, verbose: bool = False) -> Compatibility:
        compat = Compatibility(self._common_reasons())
        if verbose and not compat:
            print(f"accelops: op {self.NAME} is not compatible: {'; '.join(compat.reasons)}", file=sys.stderr)
        return compat


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

    def build_args(self, variant: str) -> Dict[str, List[str]]:
        from . import cuda_checks

        if variant == "hip":  # torch passes PYTORCH_ROCM_ARCH itself
            cuda_cflags = ["-O3"] + self.hipcc_args()
        else:
            arches, _ = cuda_checks.arch_list(cuda_checks.nvcc_path())
            cuda_cflags = cuda_checks.gencode_flags(arches) + ["-O3"] + self.nvcc_args()
        return {"cflags": ["/O2" if _is_msvc() else "-O3"] + self.host_args(), "cuda_cflags": cuda_cflags,
                "ldflags": []}

    def key_args(self, variant: str) -> Dict[str, object]:
        """The build flags with the GPU arches as their inputs (``TORCH_CUDA_ARCH_LIST``, the visible devices,
        or nvcc's defaults, keyed by nvcc's identity; ``PYTORCH_ROCM_ARCH`` on ROCm), so a warm load runs
        no nvcc."""
        from . import cuda_checks

        host = {"cflags": ["/O2" if _is_msvc() else "-O3"] + self.host_args(), "ldflags": []}
        if variant == "hip":
            return {**host, "cuda_cflags": ["-O3"] + self.hipcc_args(),
                    "rocm_arch": os.environ.get("PYTORCH_ROCM_ARCH", "")}
        return {**host, "cuda_cflags": ["-O3"] + self.nvcc_args(), "arches": cuda_checks.arch_inputs()}

    def toolchain_identity(self) -> Dict[str, str]:
        from . import cuda_checks

        return {**super().toolchain_identity(), "nvcc": _tool_identity(cuda_checks.nvcc_path())}

    def is_compatible(self, verbose: bool = False) -> Compatibility:
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
        compat = Compatibility(reasons + self._common_reasons(), warnings)
        if verbose and not compat:
            print(f"accelops: op {self.NAME} is not compatible: {'; '.join(compat.reasons)}", file=sys.stderr)
        return compat
