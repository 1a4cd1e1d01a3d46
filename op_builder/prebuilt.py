"""Ahead-of-time builds: which ops ``DS_BUILD_*`` selects, their setuptools extensions, and loading them.

A prebuilt install holds ``accelops/prebuilt/accelops_<op>_<variant><ext>`` and ``accelops/build_info.json``
recording accelops, torch, CUDA/HIP, Python, the accelerator and each op with its variants (CPU tiers,
or ``cuda``/``hip``). ``load_prebuilt`` uses a module only when all of those match this machine.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Tuple

from . import cpu_tier, jit_cache

BUILD_INFO = "build_info.json"
PREBUILT_PACKAGE = "accelops.prebuilt"


def _package_dir() -> Path:
    import accelops

    return Path(accelops.__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def read_build_info() -> Optional[dict]:
    """The installed ``build_info.json``, or None when accelops was installed without prebuilt ops."""
    try:
        return json.loads((_package_dir() / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return None


def _accelerator_name(builder) -> str:
    if builder.accelerator_name:
        return builder.accelerator_name
    from accelops.accelerator import get_accelerator

    return get_accelerator().name


def _variants(info: dict, builder) -> List[str]:
    entry = info.get("ops", {}).get(builder.NAME)
    variants = entry.get("variants") if isinstance(entry, dict) else None
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise ValueError(f"{BUILD_INFO} has no valid variant list for op {builder.NAME}: {entry!r}")
    return variants


def _choose(info: dict, builder) -> Tuple[Optional[str], Optional[str]]:
    """``(variant, None)``: the installed variant to use here, or ``(None, why none fits)``.

    A CPU op takes the best tier this CPU runs among those installed (only ``ACCELOPS_CPU_TIER`` when set)
    and does not care which accelerator was chosen; every op needs the same torch major.minor, CUDA/HIP
    build and Python as the build host.
    """
    import torch

    try:
        variants = _variants(info, builder)
    except ValueError as exc:
        return None, str(exc)
    here_torch = ".".join(torch.__version__.split(".")[:2])
    checks = [
        ("torch", ".".join(str(info.get("torch", "")).split(".")[:2]), here_torch),
        ("CUDA", info.get("cuda"), torch.version.cuda),
        ("HIP", info.get("hip"), torch.version.hip),
        ("Python", info.get("python"), sys.implementation.cache_tag),
    ]
    if builder.KIND != "cpu":
        checks.append(("accelerator", info.get("accelerator"), _accelerator_name(builder)))
    for what, built, here in checks:
        if built != here:
            return None, f"built for {what} {built}, this machine has {here}"
    wanted = [builder.variant()]
    if builder.KIND == "cpu" and not os.environ.get("ACCELOPS_CPU_TIER", "").strip():
        wanted = cpu_tier.supported_tiers()
    chosen = next((v for v in wanted if v in variants), None)
    if chosen is None:
        return None, f"no build for this machine's {' or '.join(wanted)} (built: {', '.join(variants)})"
    return chosen, None


def prebuilt_status(builder) -> dict:
    """What the wheel holds for ``builder``'s op, without importing it (for ds_report).

    ``{"installed": bool, "variants": [...], "torch": str|None, "usable": bool, "reason": str|None}``;
    ``reason`` says why an installed module would be skipped on this machine.
    """
    info = read_build_info()
    if not info or builder.NAME not in info.get("ops", {}):
        return {"installed": False, "variants": [], "torch": None, "usable": False, "reason": None}
    try:
        variants = _variants(info, builder)
    except ValueError:
        variants = []
    _, reason = _choose(info, builder)
    return {"installed": True, "variants": variants, "torch": info.get("torch"), "usable": reason is None,
            "reason": reason}


def load_prebuilt(builder) -> Tuple[Optional[ModuleType], Optional[str]]:
    """``(module, None)`` when a matching prebuilt module loads, else ``(None, reason or None)``.

    The reason is None when no prebuilt module of this op was installed at all.
    """
    info = read_build_info()
    if not info or builder.NAME not in info.get("ops", {}):
        return None, None
    variant, reason = _choose(info, builder)
    if reason:
        return None, reason
    name = builder.module_name(variant)
    folder = _package_dir() / "prebuilt"
    path = next((folder / f"{name}{s}" for s in EXTENSION_SUFFIXES if (folder / f"{name}{s}").is_file()), None)
    if path is None:
        return None, f"{name} is recorded in {BUILD_INFO} but missing from {folder}"
    try:
        return jit_cache.import_path(path, name), None
    except ImportError as exc:
        return None, f"cannot import {path}: {exc}"


# ---------------------------------------------------------------------- setup.py side
def _flag(name: str) -> Optional[bool]:
    value = os.environ.get(name)
    return None if value is None or value == "" else value not in ("0", "false", "False")


def requested() -> bool:
    """True when any ``DS_BUILD_*`` variable asks for a prebuild."""
    return any(k.startswith("DS_BUILD_") and k != "DS_BUILD_CPU_TIERS" and _flag(k) for k in os.environ)


def plan(ops: Dict[str, type]) -> Tuple[Dict[str, List[str]], List[str]]:
    """``({op: variants}, notes)``: what to prebuild per ``DS_BUILD_OPS`` / ``DS_BUILD_<OP>``.

    ``DS_BUILD_OPS=1`` takes every compatible op (incompatible ones are skipped with a note);
    ``DS_BUILD_<OP>=1`` forces one op and raises ``RuntimeError`` when it cannot be built here;
    ``DS_BUILD_<OP>=0`` excludes it. CPU ops get every tier the platform may need, or the tiers listed
    in ``DS_BUILD_CPU_TIERS`` (e.g. ``avx2,scalar``) for a wheel meant for known machines.
    """
    from .builder import OpBuildError

    all_flag = bool(_flag("DS_BUILD_OPS"))
    tiers = cpu_tier.platform_tiers()
    if os.environ.get("DS_BUILD_CPU_TIERS"):
        tiers = [t.strip() for t in os.environ["DS_BUILD_CPU_TIERS"].split(",") if t.strip()]
        unknown = [t for t in tiers if t not in cpu_tier.TIERS]
        if unknown:
            raise ValueError(f"DS_BUILD_CPU_TIERS: unknown tiers {unknown}; known: {', '.join(cpu_tier.TIERS)}")
    chosen, notes = {}, []
    for name, cls in ops.items():
        own = _flag(f"DS_BUILD_{name.upper()}")
        if own is False or (own is None and not all_flag):
            continue
        builder = cls()
        compat = builder.is_compatible()
        if not compat:
            message = f"op {name}: {'; '.join(compat.reasons)}"
            if own:
                raise OpBuildError(f"DS_BUILD_{name.upper()}=1 but {message}")
            notes.append(f"skipped {message}")
            continue
        chosen[name] = list(tiers) if builder.KIND == "cpu" else [builder.variant()]
    return chosen, notes


def extensions(ops: Dict[str, type], chosen: Dict[str, List[str]], csrc_rel: str) -> list:
    """setuptools extensions (``accelops.prebuilt.<module>``) for ``chosen``; paths relative to setup.py."""
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    result = []
    for name, variants in chosen.items():
        builder = ops[name]()
        for variant in variants:
            args = builder.build_args(variant)
            make = CUDAExtension if builder.KIND == "cuda" else CppExtension
            compile_args = {"cxx": args["cflags"]}
            if builder.KIND == "cuda":
                compile_args["nvcc"] = args["cuda_cflags"]
            result.append(make(
                name=f"{PREBUILT_PACKAGE}.{builder.module_name(variant)}",
                sources=[f"{csrc_rel}/{s}" for s in builder.sources()],
                include_dirs=[os.path.abspath(f"{csrc_rel}/{p}") for p in builder.include_paths()],
                extra_compile_args=compile_args,
                extra_link_args=args["ldflags"],
            ))
    return result


def build_info(chosen: Dict[str, List[str]], accelerator: str) -> dict:
    """The ``build_info.json`` content for a prebuild of ``chosen`` on this build host."""
    import torch

    from accelops.version import __version__

    return {
        "accelops": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "python": sys.implementation.cache_tag,
        "accelerator": accelerator,
        "ops": {name: {"variants": variants} for name, variants in chosen.items()},
    }
