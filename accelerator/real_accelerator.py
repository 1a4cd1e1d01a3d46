"""Backend registry and selection: ``get_accelerator()``, ``set_accelerator()`` and friends.

Selection happens on the first ``get_accelerator()`` call, never at import:

1. ``DS_ACCELERATOR=<name>`` wins. Unknown names are an error listing the valid ones; ``cuda`` is
   accepted without a visible GPU so CUDA ops can be cross-compiled on a build host.
2. Otherwise every known backend (built-ins plus plugins from the entry-point group
   ``accelops.accelerators``) is probed for devices in descending ``priority``; the first present
   one wins. CPU has priority 0 and is always present, so it is the quiet fallback.

The choice and its reason are kept; ``accelerator_selection()`` returns them.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import threading
from typing import Dict, List, Optional, Tuple, Type

from .abstract_accelerator import Accelerator

ENV_VAR = "DS_ACCELERATOR"
ENTRY_POINT_GROUP = "accelops.accelerators"

_BUILTIN_BACKENDS: Dict[str, str] = {
    "cuda": "cuda_accelerator:CudaAccelerator",
    "xpu": "xpu_accelerator:XpuAccelerator",
    "hpu": "hpu_accelerator:HpuAccelerator",
    "npu": "npu_accelerator:NpuAccelerator",
    "mps": "mps_accelerator:MpsAccelerator",
    "cpu": "cpu_accelerator:CpuAccelerator",
}


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """One backend's answer during detection."""

    name: str
    priority: int
    present: bool
    reason: str
    source: str  # "builtin" or "plugin:<distribution>"


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which accelerator was chosen, how (``env``, ``detected``, ``set_accelerator``) and why."""

    name: str
    how: str
    reason: str
    probes: Tuple[ProbeResult, ...] = ()


_lock = threading.RLock()
_accelerator: Optional[Accelerator] = None
_selection: Optional[Selection] = None


def builtin_backend_class(name: str) -> Type[Accelerator]:
    """Import and return the built-in backend class called ``name`` (e.g. ``"cuda"``)."""
    module_name, class_name = _BUILTIN_BACKENDS[name].split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, class_name)


def _plugin_entry_points() -> list:
    from importlib.metadata import entry_points

    try:
        return list(entry_points(group=ENTRY_POINT_GROUP))
    except TypeError:  # Python 3.9: entry_points() takes no keyword
        return list(entry_points().get(ENTRY_POINT_GROUP, []))


def _load_plugins() -> Tuple[Dict[str, Tuple[Type[Accelerator], str]], List[ProbeResult]]:
    """Return ``{name: (class, source)}`` for valid plugins, plus rows for the broken ones."""
    plugins: Dict[str, Tuple[Type[Accelerator], str]] = {}
    broken: List[ProbeResult] = []
    for entry_point in _plugin_entry_points():
        dist = getattr(getattr(entry_point, "dist", None), "name", None) or entry_point.value
        source = f"plugin:{dist}"
        name = entry_point.name.lower()
        try:
            cls = entry_point.load()
        except Exception as exc:
            broken.append(ProbeResult(name, -1, False, f"plugin failed to load: {exc!r}", source))
            continue
        if not (isinstance(cls, type) and issubclass(cls, Accelerator)):
            broken.append(ProbeResult(name, -1, False, "plugin entry point is not an Accelerator subclass", source))
        elif not isinstance(cls.priority, int) or isinstance(cls.priority, bool):
            broken.append(ProbeResult(name, -1, False, f"plugin priority must be an int, got {cls.priority!r}", source))
        elif name in _BUILTIN_BACKENDS:
            broken.append(ProbeResult(name, -1, False, "plugin name clashes with a built-in backend; ignored", source))
        else:
            plugins[name] = (cls, source)
    return plugins, broken


def _known_backends() -> Tuple[Dict[str, Tuple[Type[Accelerator], str]], List[ProbeResult]]:
    known = {name: (builtin_backend_class(name), "builtin") for name in _BUILTIN_BACKENDS}
    plugins, broken = _load_plugins()
    known.update(plugins)
    return known, broken


def accelerator_names() -> List[str]:
    """Names ``DS_ACCELERATOR`` accepts: the built-ins and every loadable plugin, sorted."""
    known, _broken = _known_backends()
    return sorted(known)


def _probe(cls: Type[Accelerator]) -> Tuple[bool, str]:
    try:
        present, reason = cls.probe()
        return bool(present), str(reason)
    except Exception as exc:  # a probe must never break detection
        return False, f"probe raised {exc!r}"


def probe_accelerators() -> List[ProbeResult]:
    """Probe every known backend, highest priority first, and return one row each (never raises)."""
    known, broken = _known_backends()
    return _probe_all(known, broken)


def _probe_all(known, broken) -> List[ProbeResult]:
    rows = []
    for name, (cls, source) in sorted(known.items(), key=lambda item: (-item[1][0].priority, item[0])):
        present, reason = _probe(cls)
        rows.append(ProbeResult(name, cls.priority, present, reason, source))
    return rows + broken


def available_accelerators() -> List[str]:
    """Names of backends whose devices are present on this machine, highest priority first."""
    return [row.name for row in probe_accelerators() if row.present]


def _from_env(value: str) -> Tuple[Accelerator, Selection]:
    known, _broken = _known_backends()
    name = value.strip().lower()
    if name not in known:
        raise ValueError(f"{ENV_VAR}={value!r} is not a known accelerator; valid names: {', '.join(sorted(known))}")
    cls, _source = known[name]
    present, reason = _probe(cls)
    if not present and name != "cuda" and getattr(cls, "vendor_module", None):
        vendor = cls.vendor_module.split(".")[0]
        if importlib.util.find_spec(vendor) is None:
            raise RuntimeError(f"{ENV_VAR}={name} needs the {vendor} package, which is not installed")
    if not present:
        reason = f"{reason}; used anyway because {ENV_VAR} asks for it (e.g. to cross-compile ops)"
    return cls(), Selection(name, "env", f"{ENV_VAR}={value}: {reason}")


def _detect() -> Tuple[Accelerator, Selection]:
    known, broken = _known_backends()
    probes = _probe_all(known, broken)
    for row in probes:
        if row.present:
            cls, _source = known[row.name]
            reason = row.reason
            if row.name == "cpu":
                reason = "no accelerator device is present; the CPU is the fallback"
            return cls(), Selection(row.name, "detected", reason, tuple(probes))
    raise RuntimeError("no accelerator backend is present, not even the CPU")  # CPU always probes present


def get_accelerator() -> Accelerator:
    """Return the process-wide accelerator, selecting it on first call (see module docstring).

    Side effects on first call: reads ``DS_ACCELERATOR``, loads plugin entry points and probes
    devices (``torch.cuda.device_count()`` et al.). Later calls return the same object until
    ``set_accelerator()`` replaces it.
    """
    global _accelerator, _selection
    accelerator = _accelerator
    if accelerator is not None:
        return accelerator
    with _lock:
        if _accelerator is None:
            value = os.environ.get(ENV_VAR, "").strip()
            _accelerator, _selection = _from_env(value) if value else _detect()
        return _accelerator


def is_current_accelerator_supported() -> bool:
    """True when the current accelerator (selected first if needed) is one of accelops' built-in backends
    (cuda, xpu, hpu, npu, mps, cpu); False for a plugin or ``set_accelerator()`` object of another device
    type. Like DeepSpeed's, it compares ``get_accelerator().device_name()``."""
    return get_accelerator().device_name() in _BUILTIN_BACKENDS


def set_accelerator(accelerator: Accelerator) -> None:
    """Make ``accelerator`` the process-wide accelerator returned by ``get_accelerator()``.

    Raises ``TypeError`` unless ``accelerator`` is an ``Accelerator`` instance.
    """
    global _accelerator, _selection
    if not isinstance(accelerator, Accelerator):
        raise TypeError(
            f"set_accelerator() expects an accelops Accelerator instance, got {type(accelerator).__name__}"
        )
    with _lock:
        _accelerator = accelerator
        _selection = Selection(accelerator.name, "set_accelerator", "set explicitly by set_accelerator()")


def accelerator_selection() -> Selection:
    """Return how and why the current accelerator was chosen (selecting it first if needed)."""
    get_accelerator()
    assert _selection is not None
    return _selection


def reset_accelerator() -> None:
    """Forget the current choice, so the next ``get_accelerator()`` selects again (tests, REPLs)."""
    global _accelerator, _selection
    with _lock:
        _accelerator = None
        _selection = None
