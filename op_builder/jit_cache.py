"""The JIT cache: per-user folder, one entry per cache key, a file lock per key, atomic publication.

An entry is a folder ``<cache>/<module>/`` holding ``<module><ext>`` and ``manifest.json`` (size and
sha256 of the object). It is built in ``<cache>/<module>.tmp-<pid>-<random>/`` and published with one
``os.rename``, so readers see a complete entry or none. Builders of one key serialise on
``<cache>/locks/<module>.lock`` (``fcntl.flock``, on Windows ``msvcrt.locking``; the system drops it when
its holder dies). A holder removes the temporary folders of dead builders, and a corrupt entry is moved aside
and rebuilt.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from .progress import Progress

CACHE_ENV = "ACCELOPS_CACHE_DIR"
LOCK_TIMEOUT_ENV = "ACCELOPS_BUILD_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 3600.0
MANIFEST = "manifest.json"
EXT = ".pyd" if sys.platform == "win32" else ".so"  # what torch.utils.cpp_extension produces


class CacheLockTimeout(TimeoutError):
    """Another process held the build lock of a cache entry for longer than the timeout."""


def cache_root(create: bool = True) -> Path:
    """``$ACCELOPS_CACHE_DIR``, else ``$XDG_CACHE_HOME/accelops``, else ``~/.cache/accelops``; on Windows
    ``%LOCALAPPDATA%\\accelops\\cache``.

    With ``create`` the folder is made on first use with owner-only permissions (0700); an existing
    folder owned by another user, or writable by group or others, is refused with ``PermissionError``
    (objects in it are imported into this process). ``create=False`` only computes the path.
    """
    configured = os.environ.get(CACHE_ENV)
    if configured:
        root = Path(configured).expanduser()
    elif sys.platform == "win32":  # the per-user, non-roaming application data folder
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
        root = Path(base) / "accelops" / "cache"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(base) / "accelops"
    if not create:
        return root
    with _usable(root, "the folder"):
        if not root.is_dir():
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(root, 0o700)
    _check_private(root)
    return root


@contextlib.contextmanager
def _usable(path: Path, what: str) -> Iterator[None]:
    """Turn an ``OSError`` on the cache (a file where a folder belongs, no write permission, ...) into the same
    error type with a message that names the path and the way out."""
    try:
        yield
    except OSError as exc:
        problem = exc.strerror or str(exc)
        raise type(exc)(exc.errno, f"accelops: cannot use the op cache: {what} {path}: {problem}. Make it a folder "
                                   f"you can write to, or set {CACHE_ENV} to one") from None


def _check_private(root: Path) -> None:
    if sys.platform == "win32":  # per-user profile folder; POSIX owner and mode bits do not apply
        return
    st = root.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(f"accelops: the op cache {root} is owned by uid {st.st_uid} with mode "
                              f"{stat.filemode(st.st_mode)}; it must be yours and not writable by group or others "
                              f"(its objects are imported into this process). Fix it (`chmod 700 {root}`) or set "
                              f"{CACHE_ENV} to a private folder")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, module_name: str, extra: dict) -> None:
    """Record size and sha256 of ``folder/<module_name><ext>`` (plus ``extra``) in its manifest."""
    obj = folder / f"{module_name}{EXT}"
    data = {"module": module_name, "file": obj.name, "size": obj.stat().st_size, "sha256": file_sha256(obj), **extra}
    (folder / MANIFEST).write_text(json.dumps(data, indent=1, sort_keys=True))


def read_manifest(folder: Path) -> dict:
    """The entry's manifest ({} when missing or unreadable)."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def verified_object(folder: Path, module_name: str) -> Optional[str]:
    """None when ``folder`` holds an intact object for ``module_name``, else why not (missing, corrupt)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return "not built"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({exc})"
    obj = folder / f"{module_name}{EXT}"
    try:
        size = obj.stat().st_size
    except OSError:
        return f"{obj.name} is missing"
    if size != manifest.get("size"):
        return f"{obj.name} is truncated or replaced ({size} bytes, recorded {manifest.get('size')})"
    if file_sha256(obj) != manifest.get("sha256"):
        return f"{obj.name} does not match its recorded sha256"
    return None


def lock_timeout() -> float:
    """Seconds to wait for another process's build: ``ACCELOPS_BUILD_LOCK_TIMEOUT`` (a positive number, or
    ``inf`` to wait for ever), default 3600; anything else is a ``ValueError`` naming the variable."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also refuses nan
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={raw!r}: expected a positive number of seconds, or inf to wait for "
                         f"ever")
    return value


def _try_lock(handle) -> bool:
    """Take the exclusive lock of the open lock file without blocking; False when another process holds it.

    Windows: ``msvcrt.locking`` on the file's first byte (released by the system when its holder dies).
    Elsewhere: ``fcntl.flock`` on the whole file.
    """
    if sys.platform == "win32":
        import msvcrt

        handle.seek(0)  # msvcrt locks bytes from the current position: always the first byte
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:  # PermissionError (EACCES) while another process holds it
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # e.g. ENOLCK: a filesystem without flock
        raise OSError(exc.errno, f"accelops: cannot lock {handle.name} ({exc.strerror}); the op cache needs a "
                                 f"filesystem with flock support: set {CACHE_ENV} to a local folder") from None
    return True


def _unlock(handle) -> None:
    """Release the lock ``_try_lock`` took."""
    if sys.platform == "win32":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def build_lock(root: Path, module_name: str, what: str) -> Iterator[None]:
    """Hold the exclusive build lock of one cache key; waits with a progress line, up to the timeout.

    The lock (see ``_try_lock``) is held through an open file, so a holder that is killed releases it.
    Raises ``CacheLockTimeout`` naming the lock file and the time waited.
    """
    locks = root / "locks"
    with _usable(locks, "the lock folder"):
        locks.mkdir(mode=0o700, exist_ok=True)
        open(locks / f"{module_name}.lock", "a").close()
    path = locks / f"{module_name}.lock"
    timeout = lock_timeout()
    with open(path, "a+") as handle:
        start = time.monotonic()
        if not _try_lock(handle):
            with Progress(f"accelops: waiting for {what}, being built by another process (lock {path})"):
                while not _try_lock(handle):
                    waited = time.monotonic() - start
                    if waited > timeout:
                        raise CacheLockTimeout(
                            f"accelops: gave up waiting for the build lock {path} after {waited:.0f} s "
                            f"({LOCK_TIMEOUT_ENV}={timeout:g}); another process is still building {what}. "
                            f"If no build is running, the lock file is stale only on filesystems without "
                            f"flock support (e.g. some NFS): set {CACHE_ENV} to a local folder"
                        )
                    time.sleep(0.1)
        try:
            yield
        finally:
            _unlock(handle)


def _remove(path: Path) -> None:
    """Delete a folder tree, a file or a link, whatever stands at ``path``."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def remove_leftovers(root: Path, module_name: str) -> None:
    """Delete temporary build folders of ``module_name`` (call only while holding its build lock)."""
    for stale in root.glob(f"{module_name}.tmp-*"):
        _remove(stale)


def discard_entry(root: Path, module_name: str) -> None:
    """Move a (corrupt) published entry, folder or stray file, aside and delete it (only while holding its
    build lock)."""
    entry = root / module_name
    if entry.exists() or entry.is_symlink():
        aside = root / f"{module_name}.tmp-discard-{os.getpid()}"
        os.rename(entry, aside)
        _remove(aside)


def unusable_reason(root: Path) -> Optional[str]:
    """Why ``load()`` would refuse the existing cache folder ``root`` (not private, not a folder), or None.
    Creates nothing: for reports."""
    if not root.exists():
        return None
    if not root.is_dir():
        return f"{root} is not a folder"
    try:
        _check_private(root)
    except PermissionError as exc:
        return str(exc)
    return None


def new_build_dir(root: Path, module_name: str) -> Path:
    """A fresh private temporary folder next to the entry (same filesystem, so rename is atomic)."""
    with _usable(root, "the folder"):
        return Path(tempfile.mkdtemp(prefix=f"{module_name}.tmp-{os.getpid()}-", dir=root))


def publish(build_dir: Path, root: Path, module_name: str) -> Path:
    """Atomically rename ``build_dir`` (holding object + manifest) to the entry folder; returns it."""
    entry = root / module_name
    os.rename(build_dir, entry)
    if sys.platform != "win32":
        os.chmod(entry, 0o700)
    return entry
