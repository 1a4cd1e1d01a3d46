"""Environment facts for ds_report: versions, tools, CPU and the accelerator, each probe guarded.

Every function returns plain data (str/int/bool/None, lists, dicts) so the same facts feed the text
and the JSON report. A probe that fails returns its reason instead of raising.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
from typing import Any, Dict, List, Optional

def _not_found(reason: str, path: Optional[str] = None) -> Dict[str, Any]:
    return {"found": False, "path": path, "version": None, "reason": reason}


def tool_version(command: List[str], path: Optional[str] = None, probe=None) -> Dict[str, Any]:
    """Run ``command --version`` once (cached with the op builders' probe; ``probe()`` instead when given) and
    return path, version line or reason. ``path`` is where ``command[0]`` lives, for the report (looked up on
    PATH when not given)."""
    from accelops.op_builder.toolchain import probe_version

    path = path or shutil.which(command[0])
    if path is None:
        return _not_found(f"{command[0]} not found on PATH")
    problem, output = probe() if probe else probe_version(tuple(command))  # the builders' call and cache
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if problem or not lines:
        return _not_found(problem or f"`{command[0]} --version` printed nothing", path)
    release = [line for line in lines if "release" in line.lower()]  # nvcc/hipcc put the version there
    return {"found": True, "path": path, "version": release[0] if release else lines[0], "reason": None}


def cpu_model() -> str:
    """The CPU's model name, read from /proc/cpuinfo on Linux (no subprocess), else platform data."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_facts() -> Dict[str, Any]:
    """torch's version, install path and the CUDA/HIP it was built with."""
    try:
        import torch
    except Exception as exc:
        return {"version": None, "reason": f"torch is not importable: {exc}"}
    return {
        "version": torch.__version__,
        "path": os.path.dirname(torch.__file__),
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "reason": None,
    }


NUMPY_WARNING = "Failed to initialize NumPy"  # torch's warning at import when numpy is missing


def numpy_facts() -> Dict[str, Any]:
    """numpy's version, or why it does not import: torch warns at every import without it, and accelops
    depends on it, so a missing numpy is one row here instead of torch's warning."""
    try:
        import numpy
    except Exception as exc:
        return {"version": None, "reason": f"not importable ({exc}); torch warns \"{NUMPY_WARNING}\" at every "
                                           f"import without it. It is a dependency of accelops: pip install numpy"}
    return {"version": numpy.__version__, "reason": None}


def accelerator_facts() -> Dict[str, Any]:
    """The chosen accelerator, how and why, its communication backend and devices."""
    try:
        from accelops.accelerator import accelerator_selection, get_accelerator

        accelerator = get_accelerator()
        selection = accelerator_selection()
    except Exception as exc:
        return {"name": None, "reason": f"accelerator selection failed: {exc}"}
    facts: Dict[str, Any] = {"name": accelerator.name, "how": selection.how, "reason": selection.reason}
    for key, probe in (
        ("communication_backend", accelerator.communication_backend_name),
        ("device_count", accelerator.device_count),
    ):
        try:
            facts[key] = probe()
        except Exception as exc:
            facts[key] = None
            facts[f"{key}_error"] = str(exc)
    facts["devices"] = device_names(accelerator.name, facts.get("device_count") or 0)
    facts["probes"] = [
        {"name": row.name, "priority": row.priority, "present": row.present, "reason": row.reason, "source": row.source}
        for row in selection.probes
    ]
    return facts


def device_names(name: str, count: int) -> List[str]:
    """Human-readable device names (``torch.<name>.get_device_name(i)``) where the backend has them."""
    if name == "cpu":
        return [cpu_model()]
    try:
        import torch

        module = torch.get_device_module(name)
        return [str(module.get_device_name(index)) for index in range(count)]
    except Exception:
        return [f"{name}:{index}" for index in range(count)]


def cpu_facts() -> Dict[str, Any]:
    """CPU model, core count and the instruction-set tier CPU ops are built for (no subprocess on Linux)."""
    facts: Dict[str, Any] = {"model": cpu_model(), "cores": os.cpu_count(), "tier": None, "tiers": []}
    try:
        from accelops.op_builder import cpu_tier

        facts["tiers"] = cpu_tier.supported_tiers()
        facts["tier"] = cpu_tier.detect_tier()
    except Exception as exc:  # e.g. ACCELOPS_CPU_TIER names a tier this CPU lacks
        facts["tier_error"] = str(exc)
    return facts


def cuda_compiler_facts(torch_info: Dict[str, Any]) -> Dict[str, Any]:
    """hipcc on ROCm builds of torch, else the nvcc the op builders would use (CUDA_HOME, PATH, ...)."""
    if torch_info.get("hip"):
        return {"name": "hipcc", **tool_version(["hipcc"])}
    from accelops.op_builder import cuda_checks

    nvcc = cuda_checks.nvcc_path()
    if nvcc is None:
        return {"name": "nvcc", **_not_found(f"nvcc not found (CUDA toolkit folder: {cuda_checks.cuda_home()!r})")}
    return {"name": "nvcc", **tool_version([nvcc])}


def cxx_compiler_facts() -> Dict[str, Any]:
    """The C++ compiler op builds use (``$CXX`` may carry arguments), probed as the builders probe it."""
    from accelops.op_builder import toolchain

    path = toolchain.compiler_path()
    if path is None:
        return _not_found(toolchain.compiler_problem() or f"{toolchain.compiler_executable()} not found")
    return tool_version(list(toolchain.compiler_words()), path=path, probe=toolchain.probe_compiler)


def environment_facts() -> Dict[str, Any]:
    """Everything above the op table: accelops, Python, torch, tools, CPU, accelerator."""
    import accelops
    from accelops.op_builder.toolchain import compiler_command

    torch_info = torch_facts()
    cxx = compiler_command()
    return {
        "accelops": {"version": accelops.__version__, "path": os.path.dirname(accelops.__file__)},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "torch": torch_info,
        "numpy": guarded(numpy_facts, version=None),
        "cuda_compiler": guarded(lambda: cuda_compiler_facts(torch_info)),
        "cxx_compiler": {"command": cxx, **guarded(cxx_compiler_facts)},
        "ninja": guarded(lambda: tool_version(["ninja"])),
        "cpu": guarded(cpu_facts, model="unknown", cores=os.cpu_count(), tier=None, tiers=[]),
        "accelerator": guarded(accelerator_facts, name=None),
    }


def guarded(probe, **when_failed: Any) -> Dict[str, Any]:
    """``probe()``; when it raises, ``when_failed`` (default: a tool row that was not found) plus the reason."""
    try:
        return probe()
    except Exception as exc:
        reason = f"probe failed: {type(exc).__name__}: {exc}"
        return {**when_failed, "reason": reason} if when_failed else _not_found(reason)
