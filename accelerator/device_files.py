"""Cheap presence checks for devices whose torch support lives in a vendor package."""
from __future__ import annotations

import glob
import importlib.util
from typing import Iterable, Tuple


def probe_device_files(patterns: Iterable[str], vendor_module: str, what: str) -> Tuple[bool, str]:
    """Return ``(present, reason)`` for a device found through its device files.

    A device counts as present only when a device file matching one of ``patterns`` exists and
    ``vendor_module`` (which registers the torch device module) can be found. The vendor package
    is located, not imported, so probing stays cheap and side-effect free.
    """
    found = sorted(path for pattern in patterns for path in glob.glob(pattern))
    if not found:
        return False, f"no {what} device files ({', '.join(patterns)})"
    if importlib.util.find_spec(vendor_module.split(".")[0]) is None:
        return False, f"{len(found)} {what} device file(s) found but {vendor_module} is not installed"
    return True, f"{len(found)} {what} device file(s) found and {vendor_module} is installed"
