"""The op rows of ds_report: for every registered op, prebuilt / JIT-compatible / cached, with reasons.

``variant`` and ``source`` describe the module that would load here: the prebuilt one when it fits this
machine (``source`` "prebuilt"), else the JIT cache's ("cache") or a fresh build ("build"); None when none.
``torch_path`` says what the op's front end runs where it cannot load (FusedAdam's pure-torch step), if anything.
``abi_floor`` is the oldest torch that module loads under (its library binds through torch's stable ABI):
recorded in ``build_info.json`` or the cache entry's manifest, for a fresh build this torch's release.

Nothing here compiles or imports an op; each row's probes are guarded so one broken op becomes a row
with its reason instead of a crash.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional


def _row(name: str, builder: Optional[str], kind: Optional[str]) -> Dict[str, Any]:
    """A row with nothing known yet: not compatible, not cached, no reasons."""
    return {"name": name, "builder": builder, "kind": kind, "variant": None, "source": None, "prebuilt": None,
            "compatible": False, "reasons": [], "warnings": [], "cached": False, "cache_detail": None,
            "torch_path": None, "abi_floor": None}


def op_row(name: str, cls: type) -> Dict[str, Any]:
    """One op's facts; every probe that raises leaves its reason in the row."""
    from accelops.op_builder.prebuilt import prebuilt_status

    row = _row(name, cls.__name__, getattr(cls, "KIND", None))
    row["torch_path"] = getattr(cls, "TORCH_PATH", "") or None
    try:
        builder = cls()
        row["variant"] = builder.variant()
    except Exception as exc:
        row["reasons"] = [f"builder failed: {exc}"]
        return row
    try:
        row["prebuilt"] = prebuilt_status(builder)
    except Exception as exc:
        row["prebuilt"] = {"installed": False, "variants": [], "torch": None, "usable": False, "variant": None,
                           "reason": f"cannot read the build info: {exc}"}
    try:
        compat = builder.is_compatible(verbose=False)
        row["compatible"], row["reasons"], row["warnings"] = bool(compat), compat.reasons, compat.warnings
    except Exception as exc:
        row["reasons"] = [f"compatibility check failed: {exc}"]
    if row["compatible"]:  # an incompatible op has no cache entry for this torch/toolchain to look for
        try:
            folder, problem = builder.cache_entry()
            row["cached"] = problem is None
            row["cache_detail"] = str(folder) if problem is None else problem
        except Exception as exc:
            row["cache_detail"] = f"cache check failed: {exc}"
    if row["prebuilt"].get("usable"):  # what would load: the prebuilt module first, then the cache, then a build
        row["variant"], row["source"] = row["prebuilt"]["variant"], "prebuilt"
        row["abi_floor"] = row["prebuilt"].get("abi_floor")
    elif row["cached"]:
        row["source"] = "cache"
        row["abi_floor"] = _cached_floor(row["cache_detail"])
    elif row["compatible"]:
        row["source"] = "build"
        row["abi_floor"] = _floor_here()
    return row


def _cached_floor(folder: str) -> Optional[str]:
    from pathlib import Path

    from accelops.op_builder import jit_cache

    return jit_cache.read_manifest(Path(folder)).get("abi_floor")


def _floor_here() -> Optional[str]:
    try:
        from accelops.op_builder.op_library import abi_floor

        return abi_floor()
    except Exception:
        return None


def op_rows() -> List[Dict[str, Any]]:
    """One row per op of the op registry (every ``accelops/ops/<op>/build.py``), sorted by name."""
    try:
        from accelops.ops.registry import builders

        ops = builders()
    except Exception as exc:
        return [{**_row("(registry)", None, None), "reasons": [f"cannot list the ops: {exc}"]}]
    return [op_row(name, cls) for name, cls in ops.items()]
