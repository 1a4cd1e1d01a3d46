"""The load pipeline of an op, in a fixed order:

1. a prebuilt library from the wheel (``accelops/build_info.json``), only when it was built from this
   install's sources and flags, its ABI floor is at most this torch, and it suits this machine's CPU tier
   (and CUDA/HIP major, accelerator);
2. a JIT cache hit: the shared library is loaded directly (no ninja, no compiler, no subprocess), when its
   ABI floor (recorded in the entry's manifest) is at most this torch;
3. a JIT build under the cache key's lock, in a temporary folder published by atomic rename, then loaded from
   the published entry like a cache hit (nothing is loaded from the temporary folder: Windows refuses to
   rename a folder holding a loaded library);
4. ``OpBuildError`` naming the cause (incompatibility reasons, or the compiler output's tail + log path).

Libraries bind through torch's stable ABI (:mod:`op_builder.op_library`): what is loaded is an
:class:`~op_builder.op_library.OpLibrary`, whose attributes are the op's ``torch.ops`` operators.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Tuple

from . import jit_cache, op_library, prebuilt, toolchain, torch_noise
from .errors import Compatibility, OpBuildError
from .messages import log
from .progress import Progress

LOG_TAIL_LINES = 40


class Loaded(NamedTuple):
    """An op's loaded library, where it came from (``prebuilt``, ``cache`` or ``build``) and its variant."""

    module: op_library.OpLibrary
    origin: str
    variant: str


#: Modules loaded in this process, by module name (one key -> one import per process).
_loaded: Dict[str, Loaded] = {}


def load(builder, verbose: bool = True, use_prebuilt: bool = True) -> Loaded:
    """Load ``builder``'s op: prebuilt -> JIT cache -> JIT build (see the module docstring); ``use_prebuilt=False``
    starts at the JIT cache.

    With ``verbose`` a skipped prebuilt module is logged with its reason; build progress is always logged.
    ``TORCH_CUDA_ARCH_LIST`` is the same afterwards (a DeepSpeed-style builder's ``nvcc_args`` calling
    ``compute_capability_args`` rewrites it, as DeepSpeed's does; DeepSpeed's JIT load restores it too).
    """
    saved = os.environ.get("TORCH_CUDA_ARCH_LIST")
    try:
        return _load(builder, verbose, use_prebuilt)
    finally:
        if saved is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = saved


def _load(builder, verbose: bool, use_prebuilt: bool) -> Loaded:
    module, variant, skipped = prebuilt.load_prebuilt(builder) if use_prebuilt else (None, None, None)
    if module is not None:
        return Loaded(module, "prebuilt", variant)
    if skipped and verbose:
        log.warning("accelops: %s: prebuilt module not used: %s", builder.NAME, skipped)
    variant = builder.variant()
    name = builder.module_name(variant, builder.cache_key(variant))
    if name in _loaded:
        return _loaded[name]
    root = jit_cache.cache_root()
    entry = root / name
    if _entry_problem(entry, name) is None:  # warm hit: load the library directly
        return _import(builder, entry, name, variant, "cache")
    compat = Compatibility.of(builder.is_compatible(verbose=verbose), builder.NAME)
    if not compat:
        note = f" (prebuilt module skipped: {skipped})" if skipped else ""
        raise OpBuildError(f"accelops: cannot build op {builder.NAME}: {'; '.join(compat.reasons)}{note}")
    for warning in compat.warnings:
        log.warning("accelops: %s: %s", builder.NAME, warning)
    what = f"op {builder.NAME} ({variant})"
    with jit_cache.build_lock(root, name, what):
        problem = _entry_problem(entry, name)
        if problem is None:  # another process built it while we waited
            return _import(builder, entry, name, variant, "cache")
        if entry.exists():  # unusable: corrupt, truncated, or a folder without a manifest
            log.warning("accelops: rebuilding %s: cached object unusable (%s)", what, problem)
            jit_cache.discard_entry(root, name)
        jit_cache.remove_leftovers(root, name)
        build_dir = jit_cache.new_build_dir(root, name)
        try:
            with Progress(f"accelops: building {what}"):
                _compile(builder, build_dir, variant, name, verbose, root)
            jit_cache.write_manifest(build_dir, name, {"op": builder.NAME, "variant": variant,
                                                       "abi_floor": op_library.abi_floor()})
            jit_cache.publish(build_dir, root, name)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
    return _import(builder, entry, name, variant, "build")


def cache_entry(builder) -> Tuple[Path, Optional[str]]:
    """``(folder, problem)`` of this machine's JIT cache entry for ``builder``'s op; ``problem`` is None when an
    intact object is there, else why not (``"not built"``, truncated, ...). Compiles nothing."""
    variant = builder.variant()
    name = builder.module_name(variant, builder.cache_key(variant))
    root = jit_cache.cache_root(create=False)
    refused = jit_cache.unusable_reason(root)
    if refused:
        return root / name, f"the cache is not used: {refused}"
    folder = root / name
    return folder, _entry_problem(folder, name)


def _entry_problem(folder: Path, name: str) -> Optional[str]:
    """None when the cache entry holds an intact library this torch can load, else why not."""
    problem = jit_cache.verified_object(folder, name)
    if problem is not None:
        return problem
    floor = jit_cache.read_manifest(folder).get("abi_floor")
    if floor is None:
        return "its manifest records no ABI floor (built by an older accelops)"
    return op_library.floor_problem(floor)


def _import(builder, folder: Path, name: str, variant: str, origin: str) -> Loaded:
    try:
        module = op_library.load_library(folder / f"{name}{jit_cache.EXT}", name)
    except ImportError as exc:
        raise OpBuildError(f"accelops: op {builder.NAME}: cannot load {folder / name}{jit_cache.EXT}: {exc}. "
                           f"Delete that folder to force a rebuild") from exc
    _loaded[name] = Loaded(module, origin, variant)
    return _loaded[name]


#: Set in the thread that runs torch's JIT build for the engine: torch then compiles without importing.
_compile_only = threading.local()


def _install_compile_only_switch() -> None:
    """Wrap torch's private ``_import_module_from_library`` (the last step of ``cpp_extension.load``) so that,
    in a thread inside ``_compile``, it returns the built file's path instead of loading it. Other callers of
    torch's ``load`` are unaffected. Where a torch lacks that function, its ``load`` imports the object from
    the temporary folder as well (harmless off Windows)."""
    from torch.utils import cpp_extension

    original = getattr(cpp_extension, "_import_module_from_library", None)
    if original is None or getattr(original, "accelops_switch", False):
        return

    def import_unless_engine_build(module_name, path, is_python_module):
        if getattr(_compile_only, "active", False):
            return os.path.join(path, f"{module_name}{jit_cache.EXT}")
        return original(module_name, path, is_python_module)

    import_unless_engine_build.accelops_switch = True
    cpp_extension._import_module_from_library = import_unless_engine_build


def _compile(builder, build_dir: Path, variant: str, name: str, verbose: bool, root: Path) -> None:
    """Compile a private copy of csrc/ into ``build_dir/<name><ext>`` with torch's JIT builder; loads nothing."""
    from torch.utils.cpp_extension import load as torch_load

    src = build_dir / "src"
    shutil.copytree(builder.csrc(), src)  # hermetic; hipify writes next to these copies, not the package
    work = build_dir / "build"
    work.mkdir()
    args = builder.build_args(variant)
    cuda_cflags = builder.arch_flags(variant) + args["cuda_cflags"]
    _install_compile_only_switch()
    _compile_only.active = True
    try:
        with torch_noise.held_compiler_check() as version_notes:
            torch_load(
                name=name,
                sources=[str(src / s) for s in builder.sources()],
                extra_cflags=args["cflags"],
                extra_cuda_cflags=cuda_cflags or None,
                extra_ldflags=args["ldflags"],
                extra_include_paths=[str(src / p) for p in builder.include_paths()],
                build_directory=str(work),
                verbose=verbose,
                with_cuda=builder.uses_cuda(),
                is_python_module=False,
            )
    except Exception as exc:
        raise _compile_error(builder, exc, root, name) from None
    finally:
        _compile_only.active = False
    built = work / f"{name}{jit_cache.EXT}"
    if not built.is_file():
        raise OpBuildError(f"accelops: building op {builder.NAME} failed: the compiler `{toolchain.compiler_command()}` "
                           f"(CXX, else the default) reported success but produced no library ({built.name} is "
                           f"missing); set CXX to a working C++ compiler")
    for note in version_notes:
        log.warning("accelops: %s: built, but torch could not check the compiler's ABI: %s", builder.NAME, note)
    os.replace(built, build_dir / f"{name}{jit_cache.EXT}")
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


def _compile_error(builder, exc: Exception, root: Path, name: str) -> OpBuildError:
    logs = root / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    log_file = logs / f"{name}.log"
    text = str(exc)
    log_file.write_text(text)
    tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
    return OpBuildError(f"accelops: building op {builder.NAME} failed; compiler output (tail):\n{tail}\n"
                        f"full log: {log_file}")
