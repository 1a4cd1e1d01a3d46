"""Running a one-node plan on this host, supervised as the multi-node path supervises its nodes.

The plan's one command is the node guard (:mod:`accelops.launcher.guard`, with
``--parent=<ds_launch pid>``) running torchrun. :class:`LocalSupervisor` is the multi-node
:class:`~accelops.launcher.supervise.Supervisor` with three differences:

* the guard keeps ``ds_launch``'s stdin (so does torchrun, and so do the ranks: a rank may read the
  terminal, e.g. ``breakpoint()``), and the ranks' stdout and stderr stay apart: each is copied to
  ``ds_launch``'s stdout or stderr as it arrives (in chunks, so a prompt without a newline shows at
  once) and its last lines are kept for the failure report;
* the guard runs in a session of its own (so do torchrun and the ranks): a terminal's Ctrl-C
  reaches ``ds_launch`` alone, which then stops the node;
* stopping sends SIGTERM to the guard, which stops torchrun and the ranks and SIGKILLs whatever is
  left :data:`~accelops.launcher.guard.DEFAULT_GRACE` seconds later; a guard still running
  :data:`GUARD_STOP_WAIT` seconds after the SIGTERM is killed, and what it left (re-parented to
  ``ds_launch``, a child subreaper, see ``supervise``) gets SIGTERM at once and SIGKILL 5 s later.

What this gives (see ``supervise``): SIGINT, SIGTERM and SIGHUP stop every process of the job and
exit 128+N; a failing rank stops the job, prints ``ds_launch: localhost (node 0) failed: rank R
(local rank L) exited with code C`` and the rank's last lines, and ``ds_launch`` exits with the
rank's code (a rank killed by signal N: 128+N). If ``ds_launch`` itself is killed (SIGKILL), the
guard notices within :data:`~accelops.launcher.guard.PARENT_POLL` seconds and stops the node.
"""
import os
import signal
import subprocess
import threading

from .errors import LaunchError
from .guard import DEFAULT_GRACE
from .supervise import KILL_AFTER, Started, Supervisor, _killpg

#: Seconds the guard gets to stop the node after ds_launch's SIGTERM (its grace, and some).
GUARD_STOP_WAIT = DEFAULT_GRACE + 5


class LocalSupervisor(Supervisor):
    """Starts and supervises the one local node of a plan (see the module docstring)."""

    #: What a killed guard leaves (torchrun, ranks) has no one else to stop it: SIGTERM at once.
    orphan_wait = 0.0

    def start(self) -> None:
        """Start the node's guard; raises :class:`LaunchError` when it cannot start."""
        command = self.plan.commands[0]
        node = self.plan.nodes[0]
        self.say(f"starting {self.plan.world_size} rank(s) on this host")
        try:
            proc = subprocess.Popen(command.argv, env={**self.env, **command.env}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise LaunchError(f"cannot start {command.argv[0]!r}: {exc}") from None
        job = Started(node.host, node.node_rank, command, proc)
        err = getattr(self.err, "buffer", None)
        for pipe, dest, name in ((proc.stdout, self.out, "stdout"), (proc.stderr, err, "stderr")):
            reader = threading.Thread(target=self._copy, args=(job, pipe, dest), name=f"local-{name}", daemon=True)
            reader.start()
            job.readers.append(reader)
        self.jobs.append(job)

    def _copy(self, job: Started, pipe, dest) -> None:
        """Copy ``pipe`` to ``dest`` (binary; ``None``: this supervisor's text ``err``) chunk by chunk
        until end of file, keeping its complete lines in ``job.lines``."""
        partial = b""
        fd = pipe.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            *lines, partial = (partial + chunk).split(b"\n")
            job.lines.extend(line.decode(errors="replace") for line in lines)
            with self._lock:
                try:
                    if dest is None:
                        self.err.write(chunk.decode(errors="replace"))
                        self.err.flush()
                    else:
                        dest.write(chunk)
                        dest.flush()
                except (OSError, ValueError):
                    pass  # our output is gone; keep draining so the ranks are not blocked
        if partial:
            job.lines.append(partial.decode(errors="replace"))

    def _stop_jobs(self) -> None:
        """SIGTERM to the guard; SIGKILL if it has not ended :data:`GUARD_STOP_WAIT` seconds later."""
        live = [job for job in self.jobs if job.proc.poll() is None]
        for job in live:
            _killpg(job.proc, signal.SIGTERM)
        if self._wait(live, GUARD_STOP_WAIT):
            return
        self.say("the node guard did not stop the node in time; killing it")
        for job in live:
            _killpg(job.proc, signal.SIGKILL)
        self._wait(live, KILL_AFTER)
