"""Running a plan: reachability check, start, output, supervision, stop, report.

:func:`run_plan` starts ``plan.commands`` on the launching node (one ssh or pdsh per node, or the
one mpirun / srun; for one node on this host, its node guard with the differences described in
:mod:`accelops.launcher.local`) and supervises them until they end:

* Before anything starts, every node the launcher reaches over ssh is checked in parallel with
  ``ssh -o BatchMode=yes -o ConnectTimeout=5 [ssh args] HOST true`` (ssh and pdsh: every host;
  mpirun: the hosts other than this one; srun: none). Unreachable hosts are one
  :class:`LaunchError` naming each of them with ssh's message.
* Each command runs in a session of its own (a terminal's Ctrl-C reaches only ``ds_launch``), with
  stdout and stderr merged into one pipe. Every line goes to ``ds_launch``'s stdout as it arrives,
  prefixed with the node's host (``node2: ...``) for ssh; pdsh prefixes its lines itself; mpirun and
  srun lines pass as they print them. The last lines of each are kept for the failure report.
* One failing node ends the job: the first command that exits non-zero is the failure; every other
  one is stopped (below); the report names the host, the node rank and, when the node's output
  says it (torchrun's, Open MPI's or srun's failure summary), the failed rank and its exit code,
  followed by the last :data:`~accelops.launcher.failures.TAIL_LINES` lines of the user's output of
  that node. The exit status is the failed rank's exit code, else the command's.
* SIGINT (Ctrl-C), SIGTERM and SIGHUP stop everything the same way; the exit status is 128+signal.
  A second one while stopping kills the local ssh/pdsh/mpirun/srun processes at once (SIGKILL); the
  node guards still stop their nodes, since the connections close.
* Stopping: the stdin of each ssh/pdsh is closed (ssh passes the end of file on; the node guard on
  the node then stops torchrun and every process below it, see :mod:`accelops.launcher.guard`), pdsh,
  mpirun and srun get SIGTERM at once, an ssh that has not ended after :data:`SSH_STOP_WAIT` seconds
  gets SIGTERM (closing the connection, which stops the node too), and whatever is left 5 s later
  gets SIGKILL. On Linux ``run_plan`` makes ``ds_launch`` a child subreaper, so the ssh processes of
  a stopped pdsh (which runs each in a session of its own) become its children; it waits for them
  too (they end when their node's guard has stopped the node). So when ``run_plan`` returns, every
  ssh node's guard has finished, and no process it started is left on this node.

Writes to ``out`` (the nodes' lines) and ``err`` (ds_launch's own messages); installs signal
handlers for the duration when called from the main thread; sets ``PR_SET_CHILD_SUBREAPER`` on the
calling process for good (Linux).
"""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Deque, List, Optional, TextIO

from .commands import Command
from .errors import LaunchError
from .failures import RankFailure, find_failure, user_tail
from .guard import DEFAULT_GRACE, become_subreaper, descendants
from .hostfile import is_local_host
from .kinds import BY_DS_LAUNCH, BY_PROGRAM, LauncherKind, get_kind

#: ssh's connect timeout of the reachability check, in seconds.
SSH_CHECK_TIMEOUT = 5
#: Seconds a stopping ssh gets to end on its own (its node guard's grace and some) before SIGTERM.
SSH_STOP_WAIT = DEFAULT_GRACE + 5
#: Seconds between SIGTERM and SIGKILL for the launching node's commands.
KILL_AFTER = 5.0
#: Lines of output kept per command (the failure report shows the user's last lines of them).
KEPT_LINES = 400


def ssh_check_command(host: str, ssh_args: List[str]) -> List[str]:
    """``ssh -o BatchMode=yes -o ConnectTimeout=5 [ssh_args] HOST true``."""
    return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CHECK_TIMEOUT}", *ssh_args, host, "true"]


def hosts_to_check(plan, environ: Optional[dict] = None) -> List[str]:
    """The hosts the launcher reaches over ssh (see the module docstring; pdsh with a
    ``PDSH_RCMD_TYPE`` other than ssh in ``environ`` reaches none over ssh): the kind's
    :meth:`~accelops.launcher.kinds.LauncherKind.checked_hosts`."""
    environ = os.environ if environ is None else environ
    return get_kind(plan.launcher).checked_hosts([node.host for node in plan.nodes], environ, is_local_host)


def check_hosts(hosts: List[str], ssh_args: List[str], env: Optional[dict] = None) -> None:
    """Check in parallel that every host in ``hosts`` answers ``ssh ... HOST true``.

    Raises :class:`LaunchError` naming every host that does not, with ssh's exit status and last
    message line. Each check is bounded (ssh's connect timeout, then 30 s in all).
    """
    def check(host):
        argv = ssh_check_command(host, ssh_args)
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=env, timeout=SSH_CHECK_TIMEOUT + 25)
        except subprocess.TimeoutExpired:
            return f"{host}: no answer within {SSH_CHECK_TIMEOUT + 25} s"
        except OSError as exc:
            return f"{host}: cannot run ssh: {exc}"
        if result.returncode == 0:
            return None
        message = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
        return f"{host}: ssh exited with {result.returncode}" + (f" ({message[-1].strip()})" if message else "")

    if not hosts:
        return
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        problems = [p for p in pool.map(check, hosts) if p]
    if problems:
        shown = shlex.join(ssh_check_command("HOST", ssh_args))
        raise LaunchError(f"{len(problems)} host(s) not reachable over ssh (checked with `{shown}`): "
                          + "; ".join(problems) + ". Set up passwordless ssh to every node, fix the hostfile, "
                          "or pass --no_ssh_check")


@dataclass
class Started:
    """One running command: its ``label`` (host, or program), node rank, process, kept lines."""

    label: str
    node_rank: Optional[int]
    command: Command
    proc: subprocess.Popen
    prefix: bytes = b""
    strip: str = ""
    lines: Deque[str] = field(default_factory=lambda: deque(maxlen=KEPT_LINES))
    readers: List[threading.Thread] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.label if self.node_rank is None else f"{self.label} (node {self.node_rank})"


class Supervisor:
    """Starts and supervises the commands of one plan (see the module docstring)."""

    #: Seconds that processes re-parented to ``ds_launch`` get to end on their own before SIGTERM.
    orphan_wait = SSH_STOP_WAIT

    def __init__(self, plan, out: BinaryIO, err: TextIO, env: Optional[dict] = None):
        self.plan, self.out, self.err = plan, out, err
        self.env = dict(os.environ if env is None else env)
        self.jobs: List[Started] = []
        self.signal: Optional[int] = None
        self.subreaper = False
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        print(f"ds_launch: {text}", file=self.err, flush=True)

    # -- output ---------------------------------------------------------------------------------
    def _pump(self, job: Started) -> None:
        """Copy ``job``'s lines to ``out`` (prefixed) and keep them; returns at end of file."""
        for raw in iter(job.proc.stdout.readline, b""):
            if not raw.endswith(b"\n"):
                raw += b"\n"
            text = raw.decode(errors="replace").rstrip("\n")
            if job.strip and text.startswith(job.strip):
                text = text[len(job.strip):]
            job.lines.append(text)
            with self._lock:
                try:
                    self.out.write(job.prefix + raw)
                    self.out.flush()
                except (OSError, ValueError):
                    pass  # our stdout is gone; keep draining so the node is not blocked

    # -- start ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every command; on an error stop the ones started and raise :class:`LaunchError`."""
        plan = self.plan
        self.say(f"starting {plan.world_size} rank(s) on {len(plan.nodes)} node(s) with {plan.launcher}: "
                 + ", ".join(node.host for node in plan.nodes))
        kind = plan.kind
        stdin = subprocess.PIPE if kind.stdin_stops_node else subprocess.DEVNULL
        hosts = {node.node_rank: node.host for node in plan.nodes}
        for command in plan.commands:
            label = hosts[command.node] if command.node is not None else os.path.basename(command.argv[0])
            try:
                proc = subprocess.Popen(command.argv, env={**self.env, **command.env}, stdin=stdin,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                self.stop()
                raise LaunchError(f"cannot start {command.argv[0]!r} for {label}: {exc}") from None
            job = Started(label, command.node, command, proc)
            if kind.prefixed_by == BY_DS_LAUNCH:
                job.prefix = f"{label}: ".encode()
            elif kind.prefixed_by == BY_PROGRAM:
                job.strip = f"{label}: "
            reader = threading.Thread(target=self._pump, args=(job,), name=f"out-{label}", daemon=True)
            reader.start()
            job.readers.append(reader)
            self.jobs.append(job)

    # -- signals ----------------------------------------------------------------------------------
    def on_signal(self, signum: int, frame=None) -> None:
        """Signal handler: the first signal asks :meth:`supervise` to stop; a second one hurries."""
        if self.signal is None:
            self.signal = signum
            return
        try:  # not print(): the main thread may be inside a print to stderr
            os.write(self.err.fileno(), f"ds_launch: got {signal.Signals(signum).name} again; killing the local "
                     "processes now (the nodes stop on their own when their connection closes)\n".encode())
        except (OSError, AttributeError, ValueError):
            pass
        for job in self.jobs:
            if job.proc.poll() is None:
                _killpg(job.proc, signal.SIGKILL)
        if self.subreaper:
            ours = {job.proc.pid for job in self.jobs}
            _signal([pid for pid in descendants(os.getpid()) if pid not in ours], signal.SIGKILL)

    # -- stop -------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every command still running (see the module docstring); returns when all have ended."""
        self._stop_jobs()
        self._stop_orphans()

    def _stop_orphans(self) -> None:
        """Wait for processes re-parented to this one (a stopped pdsh's ssh) as for an ssh node:
        up to :attr:`orphan_wait` seconds, then SIGTERM, then SIGKILL."""
        if not self.subreaper:
            return
        ours = {job.proc.pid for job in self.jobs}

        def left() -> List[int]:
            _reap_orphans(ours)
            return [pid for pid in descendants(os.getpid()) if pid not in ours]

        if _until(lambda: not left(), self.orphan_wait):
            return
        self.say(f"{len(left())} process(es) of the stopped nodes still running here; sending SIGTERM")
        _signal(left(), signal.SIGTERM)
        if not _until(lambda: not left(), KILL_AFTER):
            _signal(left(), signal.SIGKILL)
            _until(lambda: not left(), KILL_AFTER)

    def _stop_jobs(self) -> None:
        live = [job for job in self.jobs if job.proc.poll() is None]
        eof_only = self.plan.kind.stop_waits_for_eof
        for job in live:
            if job.proc.stdin:
                try:
                    job.proc.stdin.close()
                except OSError:
                    pass
            if not eof_only:
                _killpg(job.proc, signal.SIGTERM)
        if self._wait(live, SSH_STOP_WAIT if eof_only else KILL_AFTER):
            return
        if eof_only:
            left = [job for job in live if job.proc.poll() is None]
            self.say("no answer from " + ", ".join(job.label for job in left) + "; closing the connection")
            for job in left:
                _killpg(job.proc, signal.SIGTERM)
            if self._wait(live, KILL_AFTER):
                return
        for job in live:
            if job.proc.poll() is None:
                _killpg(job.proc, signal.SIGKILL)
        self._wait(live, KILL_AFTER)

    @staticmethod
    def _wait(jobs: List[Started], seconds: float) -> bool:
        return _until(lambda: all(job.proc.poll() is not None for job in jobs), seconds)

    # -- supervise ------------------------------------------------------------------------------
    def supervise(self) -> int:
        """Wait for the end of the job; returns its exit status (see the module docstring)."""
        done = set()
        while True:
            if self.signal is not None:
                name = signal.Signals(self.signal).name
                running = [job.label for job in self.jobs if job.proc.poll() is None]
                self.say(f"got {name}; stopping " + (", ".join(running) or "nothing (all ended)"))
                self.stop()
                self.say(f"stopped after {name}")
                return 128 + self.signal
            for job in self.jobs:
                code = job.proc.poll()
                if code is None or id(job) in done:
                    continue
                done.add(id(job))
                if code != 0:
                    return self._failed(job, code)
            if len(done) == len(self.jobs):
                return 0
            time.sleep(0.05)

    def _failed(self, job: Started, code: int) -> int:
        for reader in job.readers:
            reader.join(timeout=5)
        lines = list(job.lines)
        failure = find_failure(lines)
        others = [other.label for other in self.jobs if other is not job and other.proc.poll() is None]
        what = failure.describe() if failure else _command_failure(self.plan.kind, code)
        if failure and failure.host and job.node_rank is None:  # mpirun/srun: the report names the host
            what += f" on {failure.host}"
        self.say(f"{job.name} failed: {what}" + (f"; stopping {', '.join(others)}" if others else ""))
        self.stop()
        tail = user_tail(lines)
        if tail:
            self.say(f"last {len(tail)} line(s) of {job.label}:")
            for line in tail:
                print(f"    {line}", file=self.err)
        status = _exit_status(code, failure)
        self.say(f"job failed on {job.label}; exit status {status}")
        return status


def _command_failure(kind: LauncherKind, code: int) -> str:
    program = kind.shown_as
    if code < 0:
        return f"{program} was killed by signal {-code}"
    if code == kind.lost_connection_code:
        return f"{program} exited with code 255 (the connection failed or was lost)"
    return f"{program} exited with code {code}"


def _exit_status(code: int, failure: Optional[RankFailure]) -> int:
    if failure and failure.exit_code:
        return failure.exit_code
    return 128 - code if code < 0 else code


def _until(done: Callable[[], bool], seconds: float) -> bool:
    """Poll ``done()`` every 50 ms for up to ``seconds``; whether it came true."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(pids: List[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _reap_orphans(ours: set) -> None:
    """Collect exited children that are not ``ours`` (those the Popen objects wait for)."""
    for pid in _zombie_children():
        if pid not in ours:
            try:
                os.waitpid(pid, os.WNOHANG)
            except OSError:
                pass


def _zombie_children() -> List[int]:
    """This process's exited, not yet collected children (from ``/proc``)."""
    found, me = [], os.getpid()
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fd:
                fields = fd.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[0] == b"Z" and int(fields[1]) == me:
            found.append(int(name))
    return found


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except OSError:
        pass


def run_plan(plan, ssh_check: bool = True, save_pid: bool = False, out: Optional[BinaryIO] = None,
             err: Optional[TextIO] = None, which: Callable[[str], Optional[str]] = shutil.which,
             supervisor: Optional[Callable[..., "Supervisor"]] = None) -> int:
    """Run ``plan`` (launcher ssh, pdsh, openmpi, mpich or slurm; or local, with ``supervisor``
    :class:`accelops.launcher.local.LocalSupervisor`); returns the exit status.

    Raises :class:`LaunchError` before anything starts when the launcher's program is not on
    ``PATH`` or (``ssh_check``) a host is unreachable. ``save_pid``: for mpirun/srun, their pid is
    written to ``<tmp>/<ds_launch pid>.deepspeed`` while they run (the guard of a local, ssh or pdsh
    node writes its own, see :mod:`accelops.launcher.guard`).
    """
    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr
    kind = plan.kind
    if kind.program and not which(kind.program):
        raise LaunchError(f"--launcher {plan.launcher} needs {kind.program!r}, which is not on PATH")
    if ssh_check:
        check_hosts(hosts_to_check(plan), plan.ssh_args)
    sup = (supervisor or Supervisor)(plan, out, err)
    sup.subreaper = become_subreaper()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            handlers[sig] = signal.signal(sig, sup.on_signal)
    pid_file = None
    try:
        sup.start()
        if save_pid and not kind.per_node:  # per node, the node guard writes its own
            pid_file = os.path.join(tempfile.gettempdir(), f"{os.getpid()}.deepspeed")
            with open(pid_file, "w") as fd:
                fd.write(str(sup.jobs[0].proc.pid))
        return sup.supervise()
    finally:
        if any(job.proc.poll() is None for job in sup.jobs):
            sup.stop()
        for job in sup.jobs:
            for reader in job.readers:
                reader.join(timeout=2)
            for pipe in (job.proc.stdin, job.proc.stdout, job.proc.stderr):
                if pipe:
                    try:
                        pipe.close()
                    except OSError:
                        pass
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if pid_file and os.path.exists(pid_file):
            os.remove(pid_file)
