"""Ahead-of-time builds: which ops ``DS_BUILD_*`` selects, their setuptools extensions, and loading them.

A prebuilt install holds ``accelops/prebuilt/accelops_<op>_<variant><ext>`` (shared libraries on torch's
stable ABI, no Python ABI in them) and ``accelops/build_info.json`` recording accelops, the torch that built
them and its ABI floor, CUDA/HIP, the accelerator and each op with its variants (CPU tiers, or ``cuda``/``hip``)
and the source key of each (sources, headers and flags it was built from). A library is used only when this
torch is at least its ABI floor (and, for GPU ops, CUDA/HIP has the same major and the accelerator matches),
its variant runs here, and its source key equals the installed tree's.
"""
from __future__ import annotations

import functools
import json
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import cpu_tier, op_library
from .errors import OpBuildError

BUILD_INFO = "build_info.json"
PREBUILT_PACKAGE = "accelops.prebuilt"
#: DS_BUILD_* variables that are not op names.
GENERAL_VARIABLES = ("DS_BUILD_OPS", "DS_BUILD_CPU_TIERS")


def package_dir() -> Path:
    """The folder of the installed ``accelops`` package (``build_info.json`` and ``prebuilt/`` live there)."""
    import accelops

    return Path(accelops.__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def read_build_info() -> Optional[dict]:
    """The installed ``build_info.json``, or None when accelops was installed without prebuilt ops."""
    try:
        return json.loads((package_dir() / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return None


def accelerator_name(builder) -> str:
    """The accelerator ``builder`` serves: the one it was created for, else the current one."""
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

    Every op needs a torch at least its ABI floor (any Python; a CPU op built with the CPU build of torch
    also loads under its CUDA build); the flavour adds its own checks. A CPU op takes the best tier this CPU
    runs among those installed (only ``ACCELOPS_CPU_TIER`` when set).
    """
    try:
        variants = _variants(info, builder)
    except ValueError as exc:
        return None, str(exc)
    floor = info.get("abi_floor")
    if floor is None:
        return None, f"{BUILD_INFO} records no ABI floor (a prebuild of an older accelops)"
    too_new = op_library.floor_problem(floor)
    if too_new:
        return None, too_new
    mismatch = builder.prebuilt_mismatch(info)
    if mismatch:
        return None, mismatch
    wanted = builder.prebuilt_candidates()
    chosen = next((v for v in wanted if v in variants), None)
    if chosen is None:
        return None, f"no build for this machine's {' or '.join(wanted)} (built: {', '.join(variants)})"
    return chosen, None


def _stale(info: dict, builder, variant: str) -> Optional[str]:
    """Why the installed module of ``variant`` does not come from this install's sources and flags, or None."""
    recorded = (info["ops"][builder.NAME].get("source_keys") or {}).get(variant)
    if recorded is None:
        return f"{BUILD_INFO} records no source key for {variant} (an older prebuild): cannot tell what it was built from"
    try:
        here = builder.source_key(variant)
    except OpBuildError as exc:
        return str(exc)
    if recorded != here:
        return (f"built from other sources or flags than this install's (csrc/ or the op's flags changed after "
                f"the prebuild); the op builds from source instead")
    return None


def _select(builder) -> Tuple[Optional[dict], Optional[str], Optional[str]]:
    """``(info, variant, reason)``: the installed variant this machine would load, or why none would.
    ``info`` is None (and so is the reason) when no prebuilt module of the op is installed."""
    info = read_build_info()
    if not info or builder.NAME not in info.get("ops", {}):
        return None, None, None
    variant, reason = _choose(info, builder)
    if reason is None:
        reason = _stale(info, builder, variant)
    return info, variant, reason


def prebuilt_status(builder) -> dict:
    """What the wheel holds for ``builder``'s op, without importing it (for ds_report).

    ``{"installed", "variants", "torch", "abi_floor", "usable", "variant", "reason"}``: ``variant`` is the one
    that would load here, ``reason`` why an installed module would be skipped on this machine.
    """
    info, variant, reason = _select(builder)
    if info is None:
        return {"installed": False, "variants": [], "torch": None, "abi_floor": None, "usable": False,
                "variant": None, "reason": None}
    try:
        variants = _variants(info, builder)
    except ValueError:
        variants = []
    usable = reason is None
    return {"installed": True, "variants": variants, "torch": info.get("torch"), "abi_floor": info.get("abi_floor"),
            "usable": usable, "variant": variant if usable else None, "reason": reason}


def load_prebuilt(builder) -> Tuple[Optional[op_library.OpLibrary], Optional[str], Optional[str]]:
    """``(library, variant, None)`` when a matching prebuilt library loads, else ``(None, None, reason or None)``.

    The reason is None when no prebuilt module of this op was installed at all.
    """
    info, variant, reason = _select(builder)
    if info is None or reason:
        return None, None, reason
    name = builder.module_name(variant)
    folder = package_dir() / "prebuilt"
    path = next((folder / f"{name}{s}" for s in EXTENSION_SUFFIXES if (folder / f"{name}{s}").is_file()), None)
    if path is None:
        return None, None, f"{name} is recorded in {BUILD_INFO} but missing from {folder}"
    try:
        return op_library.load_library(path, name), variant, None
    except ImportError as exc:
        return None, None, str(exc)


# ---------------------------------------------------------------------- setup.py side
def _flag(name: str) -> Optional[bool]:
    value = os.environ.get(name)
    return None if value is None or value == "" else value not in ("0", "false", "False")


def requested() -> bool:
    """True when any ``DS_BUILD_*`` variable asks for a prebuild."""
    return any(k.startswith("DS_BUILD_") and k != "DS_BUILD_CPU_TIERS" and _flag(k) for k in os.environ)


def _unknown_ops(ops: Dict[str, type]) -> Tuple[List[str], List[str]]:
    """``(asked, excluded)``: ``DS_BUILD_<NAME>`` variables naming no op, set to build / set to 0."""
    known = {f"DS_BUILD_{name.upper()}" for name in ops} | set(GENERAL_VARIABLES)
    unknown = sorted(k for k in os.environ if k.startswith("DS_BUILD_") and k not in known and _flag(k) is not None)
    return [k for k in unknown if _flag(k)], [k for k in unknown if not _flag(k)]


def _cpu_tiers() -> List[str]:
    """``DS_BUILD_CPU_TIERS`` (checked against this platform), else every tier of the platform."""
    platform_tiers = cpu_tier.platform_tiers()
    raw = os.environ.get("DS_BUILD_CPU_TIERS", "")
    if not raw.strip():
        return platform_tiers
    tiers = [t.strip() for t in raw.split(",") if t.strip()]
    unknown = [t for t in tiers if t not in cpu_tier.TIERS]
    if unknown:
        raise ValueError(f"DS_BUILD_CPU_TIERS: unknown tiers {unknown}; known: {', '.join(cpu_tier.TIERS)}")
    foreign = [t for t in tiers if t not in platform_tiers]
    if foreign:
        raise ValueError(f"DS_BUILD_CPU_TIERS: {', '.join(foreign)} cannot be built on this platform; its tiers are "
                         f"{', '.join(platform_tiers)}")
    return tiers


def plan(ops: Dict[str, type]) -> Tuple[Dict[str, List[str]], List[str]]:
    """``({op: variants}, notes)``: what to prebuild per ``DS_BUILD_OPS`` / ``DS_BUILD_<OP>``.

    ``DS_BUILD_OPS=1`` takes every compatible op (incompatible ones are skipped with a note);
    ``DS_BUILD_<OP>=1`` forces one op and raises ``OpBuildError`` when it cannot be built here;
    ``DS_BUILD_<OP>=0`` excludes it. CPU ops get every tier the platform may need, or the tiers listed
    in ``DS_BUILD_CPU_TIERS`` (e.g. ``avx2,scalar``). ``DS_BUILD_<NAME>=1`` for a name that is no op, or a
    tier foreign to this platform, raises ``ValueError`` before anything is built; ``DS_BUILD_<NAME>=0`` for
    an unknown name is only a note (DeepSpeed recipes exclude ops accelops does not have).
    """
    asked, excluded = _unknown_ops(ops)
    if asked:
        known = ", ".join(f"DS_BUILD_{name.upper()}" for name in ops)
        raise ValueError(f"{', '.join(asked)}: no such op; known: {known} (and DS_BUILD_OPS=1 for all)")
    notes = [f"ignored {k}=0: accelops has no such op" for k in excluded]
    all_flag = bool(_flag("DS_BUILD_OPS"))
    tiers = _cpu_tiers()
    chosen = {}
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
        chosen[name] = builder.prebuild_variants(tiers)
    return chosen, notes


def extensions(ops: Dict[str, type], chosen: Dict[str, List[str]], csrc_rel: str) -> list:
    """setuptools extensions (``accelops.prebuilt.<module>``) for ``chosen``; paths relative to setup.py."""
    result = []
    for name, variants in chosen.items():
        builder = ops[name]()
        for variant in variants:
            result.append(builder.setuptools_extension(f"{PREBUILT_PACKAGE}.{builder.module_name(variant)}", variant,
                                                       csrc_rel))
    return result


def build_info(ops: Dict[str, type], chosen: Dict[str, List[str]], accelerator: str) -> dict:
    """The ``build_info.json`` content for a prebuild of ``chosen`` on this build host."""
    import torch

    from accelops.version import __version__

    entries = {}
    for name, variants in chosen.items():
        builder = ops[name]()
        entries[name] = {"variants": variants, "source_keys": {v: builder.source_key(v) for v in variants}}
    return {
        "accelops": __version__,
        "torch": torch.__version__,
        "abi_floor": op_library.abi_floor(),
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "accelerator": accelerator,
        "ops": entries,
    }
