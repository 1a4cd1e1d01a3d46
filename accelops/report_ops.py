"""The op rows of ds_report: for every registered op, prebuilt / JIT-compatible / cached, with reasons.

Nothing here compiles or imports an op; each row's probes are guarded so one broken op becomes a row
with its reason instead of a crash.
"""
from __future__ import annotations

from typing import Any, Dict, List


def _prebuilt(builder) -> Dict[str, Any]:
    from accelops.op_builder import prebuilt

    return prebuilt.prebuilt_status(builder)


def op_row(name: str, cls: type) -> Dict[str, Any]:
    """One op's facts; every probe that raises leaves its reason in the row."""
    row: Dict[str, Any] = {"name": name, "builder": cls.__name__, "kind": getattr(cls, "KIND", None),
                           "variant": None, "prebuilt": None, "compatible": False, "reasons": [], "warnings": [],
                           "cached": False, "cache_detail": None}
    try:
        builder = cls()
        row["variant"] = builder.variant()
    except Exception as exc:
        row["reasons"] = [f"builder failed: {exc}"]
        return row
    try:
        row["prebuilt"] = _prebuilt(builder)
    except Exception as exc:
        row["prebuilt"] = {"installed": False, "variants": [], "torch": None, "usable": False,
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
    return row


def op_rows() -> List[Dict[str, Any]]:
    """One row per op in ``accelops.op_builder.ALL_OPS``, sorted by name."""
    try:
        from accelops.op_builder import all_ops

        ops = all_ops()
    except Exception as exc:
        return [{"name": "(registry)", "builder": None, "kind": None, "variant": None, "prebuilt": None,
                 "compatible": False, "reasons": [f"cannot list the ops: {exc}"], "warnings": [], "cached": False,
                 "cache_detail": None}]
    return [op_row(name, cls) for name, cls in ops.items()]
