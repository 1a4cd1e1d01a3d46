"""Rendezvous stores that can say how many ranks joined. Imports torch only when called."""
import errno
import socket
import time
from datetime import timedelta
from typing import Optional

from .errors import DistributedInitError

JOIN_KEY = "accelops/joined"
_POLL_S = 0.02
_MAX_POLL_S = 0.5


def port_in_use(port: int, host: str = "") -> Optional[str]:
    """Try to bind ``(host, port)`` the way a TCP server would; return why it failed, or ``None``.

    Binds with SO_REUSEADDR (so sockets in TIME_WAIT do not count) and closes at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno)) + f" ({exc.strerror})"
    return None


def free_port(host: str = "") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tcp_store(addr: str, port: int, rank: int, world_size: int, timeout: timedelta, seen, agent_store: bool = False):
    """Rank 0 serves a ``TCPStore`` on ``port``; the others connect to ``addr:port``.

    Rank 0 first checks that the port can be bound. With ``agent_store`` (torchrun's agent already
    serves the store on ``port``) every rank connects as a client. Raises :class:`DistributedInitError`
    when the port is in use or the master cannot be reached within ``timeout``.
    """
    import torch.distributed as dist

    if rank == 0 and not agent_store:
        why = port_in_use(port)
        if why is not None:
            advice = ("another job or an earlier run holds it. Set MASTER_PORT to a free port or stop the other "
                      "process" if why.startswith("EADDRINUSE") else "set MASTER_PORT to a port this user may bind")
            raise DistributedInitError(f"rank 0 cannot listen on MASTER_PORT {port}: {why}; {advice}", seen)
        try:
            return dist.TCPStore(addr, port, world_size, True, timeout=timeout, wait_for_workers=False)
        except dist.DistError as exc:
            if "EADDRINUSE" in str(exc) or "in use" in str(exc):
                raise DistributedInitError(f"rank 0 cannot listen on MASTER_PORT {port}: address already in use",
                                           seen) from None
            raise DistributedInitError(f"rank 0 could not start the store on port {port}: {exc}", seen) from None
    start = time.monotonic()
    try:
        return dist.TCPStore(addr, port, world_size, False, timeout=timeout)
    except dist.DistError as exc:
        waited = time.monotonic() - start
        raise DistributedInitError(
            f"rank {rank} could not reach the master at {addr}:{port} after {waited:.1f} s "
            f"(timeout {timeout.total_seconds():g} s): 0 of {world_size} ranks known to have joined. "
            "Is rank 0 running, and do MASTER_ADDR/MASTER_PORT name its host and port? "
            f"torch said: {str(exc).splitlines()[0]}", seen) from None


def file_store(path: str, world_size: int):
    """A ``FileStore`` on ``path``. The file must not hold a previous run's keys."""
    import torch.distributed as dist

    return dist.FileStore(path, world_size)


def _store_op(fn, where: str, seen):
    import torch.distributed as dist

    try:
        return fn()
    except dist.DistError as exc:
        raise DistributedInitError(f"lost the rendezvous store at {where} (did rank 0 exit?): "
                                   f"{str(exc).splitlines()[0]}", seen) from None


def _missing_ranks(store, world_size: int, limit: int = 10) -> str:
    missing = []
    for r in range(world_size):
        if not store.check([f"{JOIN_KEY}/{r}"]):
            missing.append(str(r))
            if len(missing) == limit:
                missing.append("...")
                break
    return ", ".join(missing)


def wait_for_peers(store, rank: int, world_size: int, timeout: timedelta, where: str, seen, hint: str = "") -> None:
    """Count this rank in (``store.add(JOIN_KEY, 1)``) and wait until all ``world_size`` ranks did.

    Raises :class:`DistributedInitError` when another process already joined with this rank, and
    on timeout with "k of n ranks joined after t s" and the ranks still missing.
    """
    if _store_op(lambda: store.add(f"{JOIN_KEY}/{rank}", 1), where, seen) > 1:
        stale = (f", or the store file holds an earlier run's keys (delete it or use a new path)"
                 if where.startswith("file://") else "")
        raise DistributedInitError(f"another process already joined as rank {rank}: every process needs its own "
                                   f"rank{stale} (rendezvous {where})", seen)
    _store_op(lambda: store.add(JOIN_KEY, 1), where, seen)
    start = time.monotonic()
    limit = timeout.total_seconds()
    pause = _POLL_S
    while True:
        joined = _store_op(lambda: store.add(JOIN_KEY, 0), where, seen)
        if joined >= world_size:
            return
        waited = time.monotonic() - start
        if waited >= limit:
            missing = _store_op(lambda: _missing_ranks(store, world_size), where, seen)
            raise DistributedInitError(
                f"timed out waiting for peers: {joined} of {world_size} ranks joined after {waited:.1f} s, "
                f"missing rank(s) {missing} (rank {rank}, rendezvous {where}){hint}", seen)
        time.sleep(min(pause, max(limit - waited, 0.0)))
        pause = min(pause * 1.5, _MAX_POLL_S)  # large jobs: thousands of ranks must not flood rank 0's store
