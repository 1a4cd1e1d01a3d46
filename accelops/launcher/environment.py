"""What every rank's environment gets: forwarded variables, ``.deepspeed_env`` and visible devices.

* Forwarded: every variable of the launching node whose name starts with one of
  :data:`EXPORT_PREFIXES` or with one of the accelerator's ``export_envs()`` prefixes. The
  visible-devices variables are not forwarded; they are set per node from the slots.
* ``.deepspeed_env``: ``KEY=VALUE`` lines, read from the working folder and from the home folder; a
  key in the working folder's file wins over the home folder's, and both win over forwarded
  variables. ``DS_ENV_FILE`` replaces the name: a bare name is looked up in the same two folders, a
  path (with a ``/``) is that file alone and must exist.
* Visible devices: slot ``k`` of a node becomes device ``k``; when the launching node already has a
  visible-devices variable set (``CUDA_VISIBLE_DEVICES=2,3``), slot ``k`` is its ``k``-th entry.

:func:`export_command` quotes everything for a POSIX remote shell, so values with spaces, quotes,
``$`` or newlines arrive intact.
"""
import os
import re
import shlex
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .errors import LaunchError

#: Prefixes forwarded to every rank besides the accelerator's ``export_envs()`` (DeepSpeed's
#: runner forwards MLFLOW, PYTHON, MV2 and UCX, and NCCL through its CUDA accelerator).
EXPORT_PREFIXES = ("NCCL", "PYTHON", "UCX", "MV2", "MLFLOW")
#: DeepSpeed's name of the environment file.
ENV_FILE_NAME = ".deepspeed_env"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def forwarded_env(environ: Mapping[str, str], prefixes: Iterable[str], skip: Iterable[str] = ()) -> Dict[str, str]:
    """The variables of ``environ`` whose names start with one of ``prefixes``, less ``skip``.

    Names that a shell cannot ``export`` (not ``[A-Za-z_][A-Za-z0-9_]*``) are left out.
    """
    prefixes, skip = tuple(prefixes), set(skip)
    return {k: v for k, v in sorted(environ.items())
            if k.startswith(prefixes) and k not in skip and _NAME.fullmatch(k)}


def parse_env_file(text: str, source: str) -> "OrderedDict[str, str]":
    """Parse ``KEY=VALUE`` lines. Blank lines and lines starting with ``#`` are skipped.

    The value is everything after the first ``=``, stripped of surrounding whitespace; one pair of
    matching surrounding quotes (``"..."`` or ``'...'``) is removed, nothing else is interpreted
    (no ``$`` expansion, no escapes). Raises :class:`LaunchError` with ``source``, line number and
    text for a line without ``=`` or with a key that is not a variable name.
    """
    result: "OrderedDict[str, str]" = OrderedDict()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        if not eq or not _NAME.fullmatch(key):
            raise LaunchError(f"{source}:{number}: {raw.strip()!r}: expected KEY=VALUE with KEY a variable name")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key] = value
    return result


def env_files(environ: Mapping[str, str], cwd: str, home: str) -> List[str]:
    """The environment files that apply, lowest priority first (home folder, then working folder).

    Raises :class:`LaunchError` when ``DS_ENV_FILE`` names a path that does not exist.
    """
    name = environ.get("DS_ENV_FILE") or ENV_FILE_NAME
    if os.sep in name or (os.altsep and os.altsep in name):
        path = os.path.join(cwd, os.path.expanduser(name))
        if not os.path.isfile(path):
            raise LaunchError(f"DS_ENV_FILE={name!r}: no such file")
        return [path]
    found = []
    for folder in (home, cwd):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not any(os.path.samefile(path, seen) for seen in found):
            found.append(path)
    return found


def read_env_files(paths: Sequence[str]) -> "OrderedDict[str, str]":
    """Merge the files in ``paths`` (later files win). Unreadable files are a :class:`LaunchError`."""
    merged: "OrderedDict[str, str]" = OrderedDict()
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fd:
                text = fd.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise LaunchError(f"cannot read environment file {path!r}: {exc}") from None
        merged.update(parse_env_file(text, path))
    return merged


def launching_devices(environ: Mapping[str, str], names: Sequence[str]) -> Optional[Tuple[str, List[str]]]:
    """``(variable, entries)`` of the first of ``names`` set non-empty in ``environ``, else ``None``.

    ``CUDA_VISIBLE_DEVICES=2,3`` gives ``('CUDA_VISIBLE_DEVICES', ['2', '3'])``. Entries are kept
    as text (UUIDs and MIG names are valid entries). An empty entry (``'0,,1'``) is a
    :class:`LaunchError`.
    """
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            entries = [e.strip() for e in value.split(",")]
            if not all(entries):
                raise LaunchError(f"{name}={value!r} on this node has an empty entry")
            return name, entries
    return None


def slot_devices(host: str, slots: Sequence[int], launching: Optional[Tuple[str, List[str]]]) -> List[str]:
    """The device ids of ``slots`` on ``host``: the slot numbers, or entries of the launching list.

    Raises :class:`LaunchError` for a slot beyond the launching node's visible-devices list.
    """
    if launching is None:
        return [str(s) for s in slots]
    name, entries = launching
    for slot in slots:
        if slot >= len(entries):
            raise LaunchError(f"host {host!r} slot {slot}: {name}={','.join(entries)} on this node lists only "
                              f"{len(entries)} device(s), and slots index into it")
    return [entries[s] for s in slots]


def check_name(name: str, what: str = "variable") -> str:
    """``name`` if a shell can ``export`` it, else a :class:`LaunchError`."""
    if not _NAME.fullmatch(name):
        raise LaunchError(f"{what} name {name!r} is not a valid environment variable name")
    return name


def export_command(env: Mapping[str, str]) -> str:
    """A POSIX shell ``export`` statement setting ``env`` exactly (``''`` when ``env`` is empty).

    Each value is quoted with :func:`shlex.quote`; the statement survives one round of shell parsing
    (ssh and pdsh hand the remote command to the remote login shell once).
    """
    if not env:
        return ""
    return "export " + " ".join(f"{check_name(k)}={shlex.quote(v)}" for k, v in env.items())
