"""The one-node launcher supervises its job: signals, a killed launcher, failing ranks, exit codes.

Every job runs two ranks of a script without torch whose file name carries a unique marker, so a
/proc scan finds every process of the job (the node guard, torchrun, the ranks). Each rank writes
its pid to ``up<rank>`` once running; the faults are injected only after both files exist.
"""
import os
import signal
import sys
import time
import uuid
from types import SimpleNamespace

import pytest

from helpers import free_port
from launcher_fakes import clean_env, kill_marked, launch, processes_with, survivors

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; POSIX sessions")

# --mode=wait: every rank waits; --mode=code|segv|term: rank 1 exits 3 / dies of SIGSEGV / of SIGTERM once
# rank 0 is up; --ignore_term: rank 0 ignores SIGTERM.
RANKS = r'''
import os, signal, sys, time
rank = int(os.environ["RANK"])
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
if "--ignore_term" in sys.argv and rank == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"rank {rank} up", flush=True)
with open(f"up{rank}.tmp", "w") as fd:
    fd.write(str(os.getpid()))
os.replace(f"up{rank}.tmp", f"up{rank}")
mode = opts.get("mode", "wait")
if rank == 1 and mode != "wait":
    while not os.path.exists("up0"):
        time.sleep(0.05)
    print(f"boom: rank 1 fails on purpose ({mode})", file=sys.stderr, flush=True)
    if mode == "code":
        sys.exit(3)
    os.kill(os.getpid(), {"segv": signal.SIGSEGV, "term": signal.SIGTERM}[mode])
time.sleep(600)
open(f"done{rank}", "w").close()
'''


@pytest.fixture
def job(tmp_path):
    """A job folder with the rank script; kills anything left with the marker afterwards."""
    marker = f"l{uuid.uuid4().hex[:12]}"
    j = SimpleNamespace(dir=tmp_path, marker=marker, script=f"ranks_{marker}.py", env=clean_env())
    (tmp_path / j.script).write_text(RANKS)
    j.argv = lambda *extra: ["--num_gpus", "2", "--master_port", str(free_port()), j.script, *extra]
    yield j
    kill_marked(marker)


def _start(job, *extra):
    """ds_launch in a session of its own (a signal to it reaches it alone), with stdout/stderr in files."""
    out, err = open(job.dir / "out.txt", "w"), open(job.dir / "err.txt", "w")
    proc = launch(job.argv(*extra), cwd=job.dir, env=job.env, stdout=out, stderr=err, start_new_session=True)
    out.close()
    err.close()
    deadline = time.monotonic() + 120
    while not all((job.dir / f"up{r}").exists() for r in range(2)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the ranks did not start: " + (job.dir / "err.txt").read_text())
        time.sleep(0.1)
    return proc


def _rank_pids(job):
    return [int((job.dir / f"up{r}").read_text()) for r in range(2)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_ds_launch_stops_every_process(job, sig):
    proc = _start(job)
    assert len(processes_with(job.marker)) >= 4   # ds_launch, (guard,) torchrun, two ranks
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    err = (job.dir / "err.txt").read_text()
    assert code == 128 + sig, err
    name = signal.Signals(sig).name
    assert f"ds_launch: got {name}; stopping localhost" in err and f"ds_launch: stopped after {name}" in err
    assert processes_with(job.marker) == []   # ds_launch returns once the whole job has ended
    assert not any((job.dir / f"done{r}").exists() for r in range(2))


def test_sigkill_of_ds_launch_takes_the_job_with_it(job):
    proc = _start(job)
    ranks = _rank_pids(job)
    proc.kill()
    proc.wait(timeout=30)
    assert survivors(job.marker, within=30) == []
    for pid in ranks:
        assert not os.path.exists(f"/proc/{pid}/cmdline") or job.marker.encode() not in open(
            f"/proc/{pid}/cmdline", "rb").read()


def test_a_rank_that_ignores_sigterm_is_killed_after_the_guards_grace(job):
    proc = _start(job, "--ignore_term")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=90)
    stopped = time.monotonic() - sent
    err = (job.dir / "err.txt").read_text()
    assert code == 128 + signal.SIGTERM, err
    assert "process(es) still running; sending SIGKILL" in err, err
    assert processes_with(job.marker) == []
    assert stopped < 25, stopped   # the guard's 5 s grace; torchrun alone waits 30 s before SIGKILL


@pytest.mark.parametrize("mode, status", [("code", 3), ("segv", 128 + signal.SIGSEGV), ("term", 128 + signal.SIGTERM)])
def test_a_failing_rank_ends_the_job_with_its_exit_code(job, mode, status):
    result = launch(job.argv(f"--mode={mode}"), cwd=job.dir, env=job.env)
    err = result.stderr
    assert result.returncode == status, err
    assert f"ds_launch: localhost (node 0) failed: rank 1 (local rank 1) exited with code {status}\n" in err, err
    tail = err.split("ds_launch: last ", 1)[1]
    assert f"    boom: rank 1 fails on purpose ({mode})\n" in tail, err
    assert "ChildFailedError" not in tail and "OMP_NUM_THREADS" not in tail, err
    assert err.rstrip().endswith(f"ds_launch: job failed on localhost; exit status {status}"), err
    assert "rank 0 up" in result.stdout and "rank 1 up" in result.stdout, result.stdout + err  # stdout stays stdout
    assert "boom" not in result.stdout, result.stdout
    assert (job.dir / "up0").exists() and not (job.dir / "done0").exists()
    assert processes_with(job.marker) == []


def test_a_killed_guard_still_leaves_nothing_behind(job):
    """SIGKILL of the node guard: torchrun and the ranks are re-parented to ds_launch (a child
    subreaper), which stops them and reports the guard's end."""
    proc = _start(job)
    [guard] = [pid for pid, cmdline in processes_with(job.marker) if "accelops.launcher.guard" in cmdline]
    os.kill(guard, signal.SIGKILL)
    code = proc.wait(timeout=90)
    err = (job.dir / "err.txt").read_text()
    assert code == 128 + signal.SIGKILL, err
    assert "ds_launch: localhost (node 0) failed: torchrun (under the node guard) was killed by signal 9" in err, err
    assert processes_with(job.marker) == []
