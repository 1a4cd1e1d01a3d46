"""Proof of the stable ABI, run by .ci/run under the CUDA build of a later torch (2.14.1): the CPU ops that
the CI venv's torch 2.13 built into ``ACCELOPS_CACHE_DIR`` load and pass ``ds_report --verify`` here without
compiling anything. Exits non-zero (naming the op) otherwise."""
import sys

import torch
import torch.utils.cpp_extension as cpp_extension


def forbidden(*args, **kwargs):
    raise AssertionError("an op was compiled: the library built by the older torch was not reused")


cpp_extension.load = forbidden  # the engine's only way to compile

from accelops.report import collect  # noqa: E402


def older(floor):
    """True when ``floor`` ("X.Y") is an older torch than this one: the library was built by another torch."""
    here = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    return floor is not None and tuple(int(x) for x in str(floor).split(".")) < here


facts = collect(verify=True)
cpu_ops = [row["name"] for row in facts["ops"] if row.get("kind") == "cpu"]
results = {entry["name"]: entry for entry in facts["verify"]}
failed = []
for name in cpu_ops:
    entry, row = results.get(name, {}), next(r for r in facts["ops"] if r["name"] == name)
    line = (f"{name}: {entry.get('status')} from {entry.get('origin')} (ABI floor torch>={row.get('abi_floor')}) "
            f"under torch {torch.__version__}: {entry.get('detail')}")
    print(line)
    if entry.get("status") != "PASS" or entry.get("origin") != "cache" or not older(row.get("abi_floor")):
        failed.append(name)
if not cpu_ops or failed:
    sys.exit(f"abi_proof: failed for {failed or 'every op (no CPU ops found)'}")
print(f"abi_proof: {len(cpu_ops)} CPU ops built by an older torch pass under torch {torch.__version__}")
