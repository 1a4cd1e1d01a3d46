"""The resource pool: a hostfile of ``host slots=N`` lines, or this host's own devices.

A hostfile (MPI style, as DeepSpeed reads it) has one ``HOST slots=N`` line per node; further
``key=value`` fields (Open MPI's ``max_slots=16``) are allowed and ignored; ``#`` starts a comment (a
whole line, or the rest of a line), blank lines are ignored. The pool is an ordered
``{host: slots}`` mapping in file order; that order is the node rank order.
"""
import os
import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional

from .errors import LaunchError

#: Where DeepSpeed (and so the launcher, without ``-H``) looks for a hostfile.
DEFAULT_HOSTFILE = "/job/hostfile"
#: The name of the node in a pool made from this host's devices (as DeepSpeed names it).
LOCAL_HOST = "localhost"

_HOST = re.compile(r"[A-Za-z0-9_.-]+")  # no ':', '@', ',': they are --include syntax


def parse_hostfile(text: str, source: str = "<hostfile>") -> "OrderedDict[str, int]":
    """Parse hostfile ``text`` into ``{host: slots}`` in file order.

    Raises :class:`LaunchError` naming ``source``, the line number and the line's text for a line
    that is not ``HOST slots=N``, a host listed twice (with both line numbers), ``slots`` that is
    not a positive integer (``slots=0`` included), and a file with no host at all.
    """
    pool: "OrderedDict[str, int]" = OrderedDict()
    first_line: Dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}: {raw.strip()!r}"
        host, *fields = line.split()
        options = dict(field.partition("=")[::2] for field in fields)
        if not fields or "slots" not in options or any("=" not in field for field in fields):
            raise LaunchError(f"{where}: expected 'HOST slots=N' (e.g. 'worker-0 slots=8')")
        if not _HOST.fullmatch(host) or host.startswith("-"):
            raise LaunchError(f"{where}: {host!r} is not a host name (letters, digits, '.', '-', '_')")
        slots = options["slots"]
        if not slots.isascii() or not slots.isdigit() or int(slots) < 1:
            raise LaunchError(f"{where}: slots must be a positive integer, got {slots!r}")
        if host in pool:
            raise LaunchError(f"{where}: host {host!r} is listed twice (first on line {first_line[host]})")
        pool[host] = int(slots)
        first_line[host] = number
    if not pool:
        raise LaunchError(f"{source}: no 'HOST slots=N' line in the hostfile")
    return pool


def read_hostfile(path: Optional[str]) -> "Optional[OrderedDict[str, int]]":
    """Read the hostfile at ``path``; ``None`` means the default, :data:`DEFAULT_HOSTFILE`.

    Returns ``None`` when the default hostfile does not exist (the caller then uses this host's
    devices). A hostfile named explicitly (``-H``) that does not exist or cannot be read is a
    :class:`LaunchError`; so is any content :func:`parse_hostfile` refuses.
    """
    explicit = path is not None
    path = path if explicit else DEFAULT_HOSTFILE
    if not os.path.exists(path):
        if explicit:
            raise LaunchError(f"hostfile {path!r} (-H/--hostfile) does not exist")
        return None
    if os.path.isdir(path):
        raise LaunchError(f"hostfile {path!r} is a folder, not a file")
    try:
        with open(path, encoding="utf-8") as fd:
            text = fd.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise LaunchError(f"cannot read hostfile {path!r}: {exc}") from None
    return parse_hostfile(text, source=path)


def local_pool(slots: int, reason: str) -> "OrderedDict[str, int]":
    """A pool of this host alone, ``{'localhost': slots}``; ``reason`` explains an empty one."""
    if slots < 1:
        raise LaunchError(f"no hostfile and no devices on this host: {reason}")
    return OrderedDict([(LOCAL_HOST, slots)])


def is_local_host(host: str, hostnames: Mapping[str, bool] = None) -> bool:
    """Whether ``host`` names the machine the launcher runs on.

    ``localhost``, loopback addresses and this machine's host name (full or short) count; no name
    lookup is made. ``hostnames`` (name -> True) replaces this machine's names in tests.
    """
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        return True
    if hostnames is None:
        import socket
        name = socket.gethostname()
        hostnames = {name: True, name.split(".")[0]: True}
    return host in hostnames
