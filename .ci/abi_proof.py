"""Proof of the stable ABI, run by .ci/run under the CUDA build of a later torch (2.14.1): the CPU ops that
the CI venv's torch 2.13 built into ``ACCELOPS_CACHE_DIR`` load and pass ``ds_report --verify`` here without
compiling anything (each op's verify result must say it loaded from the cache, not from a build). Exits
non-zero (naming the op) otherwise."""
import sys

import torch

from accelops.op_builder.op_library import abi_floor, floor_problem
from accelops.report.op_rows import op_rows
from accelops.report.verify import verify_ops


def older(floor):
    """True when ``floor`` ("X.Y") is an older torch than this one: the library was built by another torch."""
    return floor is not None and floor != abi_floor() and floor_problem(floor) is None


rows = {row["name"]: row for row in op_rows() if row.get("kind") == "cpu"}
cpu_ops = sorted(rows)
results = {entry["name"]: entry for entry in verify_ops([rows[name] for name in cpu_ops])}  # as ds_report --verify
failed = []
for name in cpu_ops:
    entry, row = results.get(name, {}), rows[name]
    line = (f"{name}: {entry.get('status')} from {entry.get('origin')} (ABI floor torch>={row.get('abi_floor')}) "
            f"under torch {torch.__version__}: {entry.get('detail')}")
    print(line)
    if entry.get("status") != "PASS" or entry.get("origin") != "cache" or not older(row.get("abi_floor")):
        failed.append(name)
if not cpu_ops or failed:
    sys.exit(f"abi_proof: failed for {failed or 'every op (no CPU ops found)'}")
print(f"abi_proof: {len(cpu_ops)} CPU ops built by an older torch pass under torch {torch.__version__}")
