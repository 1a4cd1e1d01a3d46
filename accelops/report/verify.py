"""``ds_report --verify``: load each op as it would really load here and check it against its torch reference.

Each op folder's ``verify.py`` holds its check (see ``accelops.ops.registry``): it runs the op through its
public front end on small inputs, compares elementwise, and fails when the front end fell back to pure
torch. An op is verified when it can load here: compatible (JIT), or prebuilt for this machine, or
already in the JIT cache; so a prebuilt op is checked on a machine without a compiler. Every op is
verified in its own child process (``python -m accelops.report.verify <op>``), so a crashing kernel
becomes a FAIL row, not a dead report. May compile ops (progress goes to stderr).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from .environment import NUMPY_WARNING

CHILD_TIMEOUT_S = 3600  # a cold CUDA build on a small machine takes minutes


def _result(name: str, status: str, detail: str, load_s: Optional[float] = None, check_s: Optional[float] = None,
            origin: Optional[str] = None, variant: Optional[str] = None) -> Dict[str, Any]:
    return {"name": name, "status": status, "load_s": load_s, "check_s": check_s, "detail": detail,
            "origin": origin, "variant": variant}


def _device_present(device: str) -> bool:
    import torch

    return device == "cpu" or (device == "cuda" and torch.cuda.is_available())


def verify_op(name: str) -> Dict[str, Any]:
    """Load one op and check it: ``{"name", "status": PASS|FAIL|SKIP, "load_s", "check_s", "detail", "origin",
    "variant"}``; ``origin`` is where the module came from (``prebuilt``, ``cache``, ``build``)."""
    try:
        import torch  # noqa: F401  (imported before the clock starts: load_s is the op's own load)

        from accelops.ops.registry import builder_class, verify_checks

        start = time.perf_counter()
        loaded = builder_class(name)().load_with_origin(verbose=False)
        load_s = round(time.perf_counter() - start, 3)
    except Exception as exc:
        return _result(name, "FAIL", f"build/load failed: {exc}")
    where = dict(origin=loaded.origin, variant=loaded.variant)
    check = verify_checks().get(name)
    if check is None:
        return _result(name, "PASS", "loaded; no numerical check is defined for this op", load_s, **where)
    if not _device_present(check.device):
        return _result(name, "SKIP", f"loaded; numerical check skipped: no {check.device.upper()} device here",
                       load_s, **where)
    start = time.perf_counter()
    try:
        status, detail = "PASS", check.run()
    except Exception as exc:
        status, detail = "FAIL", f"{type(exc).__name__}: {exc}"
    return _result(name, status, detail, load_s, round(time.perf_counter() - start, 3), **where)


def _verify_in_child(row: Dict[str, Any]) -> Dict[str, Any]:
    """``verify_op`` for one op in a child process; a crash or hang becomes a FAIL result."""
    name = row["name"]
    # torch's numpy warning (numpy missing) would repeat once per op; the report's numpy row says it once
    command = [sys.executable, "-W", f"ignore:{NUMPY_WARNING}:UserWarning", "-m", "accelops.report.verify", name]
    try:  # the child's stderr (build progress, crash messages) goes straight to ours
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=CHILD_TIMEOUT_S,
                               stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return _result(name, "FAIL", f"no result after {CHILD_TIMEOUT_S} s (hung build or check)")
    lines = child.stdout.strip().splitlines()
    if child.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    how = (f"was killed by {signal.Signals(-child.returncode).name}" if child.returncode < 0
           else f"exited {child.returncode} without a result")
    return _result(name, "FAIL", f"the check process {how} (its messages are on stderr above)")


def verify_ops(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One result per row, in order: an op that cannot load here is a SKIP with its reasons; every other op
    runs in a child."""
    results = []
    for row in rows:
        if row.get("source"):  # what would load here: prebuilt, cache or build (see op_rows)
            results.append(_verify_in_child(row))
        else:
            reasons = "; ".join(row.get("reasons") or ["unknown reason"])
            results.append(_result(row["name"], "SKIP", f"cannot load here: not prebuilt for this machine, not "
                                                        f"cached, and not buildable: {reasons}"))
    return results


if __name__ == "__main__":  # child mode: verify the op named on the command line, print one JSON line
    print(json.dumps(verify_op(sys.argv[1])))
