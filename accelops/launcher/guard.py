"""Node guard: ``python -m accelops.launcher.guard [--grace=S] [--save_pid=PID] [--node=NAME]
[--parent=PID] -- CMD...``.

``ds_launch`` runs every node's torchrun under this guard (the local node as well as ssh and pdsh
nodes), so that a node never outlives its launcher. The guard:

* starts ``CMD`` (torchrun) as its child, in a new session, with stdin from ``/dev/null`` (with
  ``--parent``: the guard's own stdin); CMD's stdout and stderr are the guard's (the ssh
  connection, or ``ds_launch``'s pipes);
* makes itself the node's *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``), so a process whose
  parent dies (torchrun's ranks run in sessions of their own) is re-parented to the guard and can
  still be found and stopped;
* watches its stdin, the ssh channel: ``ds_launch`` keeps it open and never writes to it. End of
  file means the launcher closed it (it stops this node) or the connection is gone (the launcher or
  ssh died); either way the node stops. SIGTERM, SIGINT and SIGHUP stop it the same way;
* with ``--parent=PID`` (the local node, started by ``ds_launch`` itself) it watches its parent
  instead of stdin: once its parent is no longer PID (``ds_launch`` died, even by SIGKILL, and the
  guard was re-parented) the node stops, within :data:`PARENT_POLL` seconds;
* stops the node in steps: SIGTERM to CMD's process group (torchrun then sends SIGTERM to its
  ranks); once CMD has ended, SIGTERM to every process still below the guard; SIGKILL to all that
  remains ``--grace`` seconds (default 5) after the first SIGTERM, or 1 s after the second;
* after CMD ends on its own, stops whatever it left behind (SIGTERM, 1 s, SIGKILL);
* with ``--save_pid=PID`` writes CMD's pid to ``<tmp>/PID.deepspeed`` on this node while CMD runs
  (DeepSpeed's ``--save_pid`` file, named after the launcher's pid) and removes it afterwards if it
  still holds that pid.

Exit status: CMD's (128+N when a signal N ended it); 127 when CMD cannot start; 2 for bad options.
Descendants are found through ``/proc``; elsewhere only CMD's process group is signalled.
Imports no torch.
"""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

#: Seconds between SIGTERM and SIGKILL when the node is stopped.
DEFAULT_GRACE = 5.0
#: Seconds left to processes that outlive CMD before they are killed.
LEFTOVER_GRACE = 1.0
#: Seconds between two looks at the parent's pid (``--parent``).
PARENT_POLL = 0.1
_PR_SET_CHILD_SUBREAPER = 36


def _say(node: str, text: str) -> None:
    """One line on stderr; the connection may be gone, so a failed write is ignored."""
    try:
        os.write(2, f"ds_launch guard ({node}): {text}\n".encode())
    except OSError:
        pass


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to this process; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parent_map() -> Dict[int, int]:
    """``{pid: parent pid}`` of every process in ``/proc`` (empty without ``/proc``)."""
    parents = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return parents
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fd:
                stat = fd.read()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if len(fields) > 1 and fields[0] != b"Z":
            parents[int(name)] = int(fields[1])
    return parents


def descendants(root: int) -> List[int]:
    """Live (non-zombie) processes below ``root``, from ``/proc``; parents before children."""
    children: Dict[int, List[int]] = {}
    for pid, parent in _parent_map().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


class Guard:
    """Runs one command and stops it, and everything below it, on request (see the module docstring)."""

    def __init__(self, argv: Sequence[str], grace: float = DEFAULT_GRACE, node: str = "node",
                 pid_file: Optional[str] = None, parent: Optional[int] = None):
        self.argv, self.grace, self.node, self.pid_file = list(argv), grace, node, pid_file
        self.parent = parent
        self.stop_reason: Optional[str] = None
        self._stop = threading.Event()
        self.pid = -1
        self.status: Optional[int] = None

    def request_stop(self, reason: str) -> None:
        """Ask the main loop to stop the node (thread- and signal-safe)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def watch_stdin(self) -> None:
        """Start a daemon thread that requests a stop at end of file (or error) on stdin."""
        def watch():
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            self.request_stop("the connection to ds_launch closed")
        threading.Thread(target=watch, name="stdin-watch", daemon=True).start()

    def watch_parent(self) -> None:
        """Start a daemon thread that requests a stop once this process's parent is no longer
        ``self.parent`` (the launcher ended and the guard was re-parented)."""
        def watch():
            while os.getppid() == self.parent:
                time.sleep(PARENT_POLL)
            self.request_stop(f"ds_launch (pid {self.parent}) ended")
        threading.Thread(target=watch, name="parent-watch", daemon=True).start()

    def _reap(self) -> None:
        """Collect every exited child (CMD and re-parented orphans); record CMD's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.status = os.waitstatus_to_exitcode(status)

    def _gone(self) -> bool:
        self._reap()
        return self.status is not None and not descendants(os.getpid())

    def _terminate(self, grace: float) -> None:
        """Stop CMD and every descendant: SIGTERM to CMD's process group (torchrun stops its ranks);
        once CMD has ended, SIGTERM to whatever it left; SIGKILL to all that remains ``grace``
        seconds after the first SIGTERM (or :data:`LEFTOVER_GRACE` after the leftovers' SIGTERM)."""
        now = time.monotonic()
        deadline, leftovers_told = now + grace, False
        if self.status is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except OSError:
                pass
        while not self._gone():
            now = time.monotonic()
            if self.status is not None and not leftovers_told:
                _signal(descendants(os.getpid()), signal.SIGTERM)
                deadline, leftovers_told = min(deadline, now + LEFTOVER_GRACE), True
            if now >= deadline:
                break
            time.sleep(0.05)
        else:
            return
        left = descendants(os.getpid())
        _say(self.node, f"{len(left)} process(es) still running; sending SIGKILL")
        if self.status is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
        _signal(left, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not self._gone() and time.monotonic() < deadline:
            time.sleep(0.05)

    def run(self) -> int:
        """Run CMD to its end or until a stop is requested; returns the exit status (see module docstring)."""
        become_subreaper()
        try:
            stdin = None if self.parent else subprocess.DEVNULL  # --parent: stdin is not the watched channel
            proc = subprocess.Popen(self.argv, stdin=stdin, start_new_session=True)
        except OSError as exc:
            _say(self.node, f"cannot run {self.argv[0]!r}: {exc}")
            return 127
        self.pid = proc.pid
        proc.returncode = 0  # the guard reaps CMD itself (waitpid(-1)); keep Popen from waiting too
        self._write_pid_file()
        try:
            while self.status is None and not self._stop.wait(0.1):
                self._reap()
            if self.status is None:
                _say(self.node, f"{self.stop_reason}; stopping {os.path.basename(self.argv[0])} (pid {self.pid})")
                self._terminate(self.grace)
            elif descendants(os.getpid()):
                self._terminate(LEFTOVER_GRACE)
        finally:
            self._remove_pid_file()
        return 1 if self.status is None else (128 - self.status if self.status < 0 else self.status)

    def _write_pid_file(self) -> None:
        if self.pid_file:
            try:  # whole or not at all: written aside, then renamed
                partial = f"{self.pid_file}.{os.getpid()}.tmp"
                with open(partial, "w") as fd:
                    fd.write(str(self.pid))
                os.replace(partial, self.pid_file)
            except OSError as exc:
                _say(self.node, f"cannot write --save_pid file {self.pid_file!r}: {exc}")

    def _remove_pid_file(self) -> None:
        if not self.pid_file:
            return
        try:
            with open(self.pid_file) as fd:
                if fd.read().strip() == str(self.pid):
                    os.remove(self.pid_file)
        except OSError:
            pass


def parse_args(argv: Sequence[str]):
    """``(grace, save_pid or None, node, parent or None, command)``; raises ValueError with a usage message."""
    if "--" not in argv:
        raise ValueError("usage: python -m accelops.launcher.guard [--grace=S] [--save_pid=PID] [--node=NAME] "
                         "[--parent=PID] -- CMD [ARGS...]")
    split = list(argv).index("--")
    grace, save_pid, node, parent = DEFAULT_GRACE, None, "node", None
    for opt in argv[:split]:
        name, _, value = opt.partition("=")
        try:
            if name == "--grace" and float(value) >= 0:
                grace = float(value)
            elif name == "--save_pid" and int(value) > 0:
                save_pid = int(value)
            elif name == "--node" and value:
                node = value
            elif name == "--parent" and int(value) > 0:
                parent = int(value)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad option {opt!r} (--grace=SECONDS, --save_pid=PID, --node=NAME, "
                             "--parent=PID)") from None
    command = list(argv[split + 1:])
    if not command:
        raise ValueError("no command after '--'")
    return grace, save_pid, node, parent, command


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the guard with ``argv`` (default: the command line); returns its exit status."""
    try:
        grace, save_pid, node, parent, command = parse_args(list(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:
        print(f"accelops.launcher.guard: {exc}", file=sys.stderr)
        return 2
    pid_file = os.path.join(tempfile.gettempdir(), f"{save_pid}.deepspeed") if save_pid else None
    guard = Guard(command, grace, node, pid_file, parent)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: guard.request_stop(f"got {signal.Signals(signum).name}"))
    if parent:
        guard.watch_parent()
    else:
        guard.watch_stdin()
    return guard.run()


if __name__ == "__main__":
    code = main()
    try:
        sys.stdout.flush()
    except OSError:
        pass
    os._exit(code)
