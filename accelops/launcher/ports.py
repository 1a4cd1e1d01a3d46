"""The rendezvous port: is it free on this host, and what to do when it is not.

torchrun's agent on node 0 (or rank 0, under mpirun and srun) listens on ``--master_port``. When
that port is taken on this host, torchrun fails with a 40-line traceback ending in EADDRINUSE.
:func:`settle_master_port` looks first, when node 0 is this host:

* one node, ``--master_port`` not given: the default port (29500) is taken, so a free port is
  used instead, and ``ds_launch`` says which on stderr;
* otherwise (several nodes, or the port was given): a :class:`LaunchError` naming the port and
  the ``--master_port`` flag, before anything starts.

A port is taken when binding it (all addresses, IPv4 and, where available, IPv6) fails with
EADDRINUSE; ``SO_REUSEADDR`` is set as torch's store sets it, so connections of an earlier job in
TIME_WAIT do not count. When node 0 is another host, nothing can be checked from here.
"""
import errno
import socket
import sys
from typing import Any, Callable, Optional, TextIO

from .errors import LaunchError
from .hostfile import is_local_host

#: torchrun's and DeepSpeed's default rendezvous port.
DEFAULT_MASTER_PORT = 29500


def port_in_use(port: int) -> bool:
    """Whether another socket holds TCP ``port`` on this host (binding it fails with EADDRINUSE)."""
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, address in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no such address family here
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def free_port() -> int:
    """A TCP port no socket holds now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def settle_master_port(plan: Any, requested: Optional[int], rebuild: Callable[[int], Any],
                       err: Optional[TextIO] = None, in_use: Callable[[int], bool] = port_in_use,
                       is_local: Callable[[str], bool] = is_local_host) -> Any:
    """The plan to run: ``plan`` itself, or ``rebuild(port)`` with a free port (see the module docstring).

    ``requested`` is ``--master_port`` as given (``None``: not given). Raises :class:`LaunchError`
    when the port is taken and cannot be replaced. ``in_use`` and ``is_local`` are replaced in tests.
    """
    port = plan.master_port
    if not is_local(plan.nodes[0].host) or not in_use(port):
        return plan
    if requested is None and plan.kind.local:
        chosen = free_port()
        print(f"ds_launch: port {port} is in use on this host; using free port {chosen} "
              "(--master_port chooses one)", file=err or sys.stderr, flush=True)
        return rebuild(chosen)
    where = f"is in use on this host ({plan.nodes[0].host}, node 0, where the rendezvous listens)"
    if requested is None:
        raise LaunchError(f"port {port} (the default --master_port) {where}; pass --master_port with a free port")
    raise LaunchError(f"--master_port {port} {where}; pass a free port")
