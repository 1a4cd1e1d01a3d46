"""The node guard: runs a node's command, stops it and everything below it when the connection closes."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from accelops.launcher.guard import parse_args
from launcher_fakes import processes_with

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; subreaper")

# A command with a grandchild in a session of its own (as torchrun starts its ranks).
TREE = r'''
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]], start_new_session=True)
print("tree up", flush=True)
time.sleep(600)
'''


def guard(*argv, stdin=subprocess.PIPE):
    return subprocess.Popen([sys.executable, "-m", "accelops.launcher.guard", *argv], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def marker():
    mark = f"g{uuid.uuid4().hex[:12]}"
    yield mark
    for pid, _ in processes_with(mark):
        os.kill(pid, signal.SIGKILL)


def _wait_line(proc, text, timeout=60):
    deadline = time.monotonic() + timeout
    line = b""
    while text.encode() not in line:
        assert time.monotonic() < deadline and proc.poll() is None, "the command did not start"
        line = proc.stdout.readline()
    return line


def _count_within(marker, count, timeout=10):
    """How many processes carry ``marker``, polled until there are ``count`` or ``timeout`` passes (a /proc
    scan right after a fork can miss a process on a busy machine)."""
    deadline = time.monotonic() + timeout
    while len(processes_with(marker)) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(processes_with(marker))


def test_end_of_input_stops_the_command_and_its_detached_children(marker):
    proc = guard("--node=node7", "--", sys.executable, "-c", TREE, marker)
    _wait_line(proc, "tree up")
    assert _count_within(marker, 3) == 3   # guard, command, grandchild
    started = time.monotonic()
    proc.stdin.close()   # what a closed ssh connection looks like
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 4   # SIGTERM, then 1 s for what the command left
    assert processes_with(marker) == []
    assert b"ds_launch guard (node7): the connection to ds_launch closed; stopping" in proc.stderr.read()


def test_sigterm_to_the_guard_stops_everything(marker):
    proc = guard("--", sys.executable, "-c", TREE, marker)
    _wait_line(proc, "tree up")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert processes_with(marker) == []
    assert b"got SIGTERM; stopping" in proc.stderr.read()


def test_exit_status_is_the_commands_and_leftovers_are_stopped(marker):
    script = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', "
              "sys.argv[1]], start_new_session=True); sys.exit(3)")
    proc = guard("--", sys.executable, "-c", script, marker)
    assert proc.wait(timeout=60) == 3
    assert processes_with(marker) == []
    proc.stdin.close()


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(marker):
    script = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
              "time.sleep(600)")
    proc = guard("--grace=0.5", "--", sys.executable, "-c", script, marker)
    _wait_line(proc, "up")
    proc.stdin.close()
    assert proc.wait(timeout=30) == 128 + signal.SIGKILL
    assert processes_with(marker) == []
    assert b"1 process(es) still running; sending SIGKILL" in proc.stderr.read()


def test_save_pid_writes_the_commands_pid_while_it_runs():
    launcher_pid = 4000000 + os.getpid() % 100000   # not a live pid: the file name only
    path = os.path.join(tempfile.gettempdir(), f"{launcher_pid}.deepspeed")
    # the guard writes the file right after starting the command: wait for it
    script = (f"import os, time\nfor _ in range(400):\n    if os.path.exists({path!r}): break\n    time.sleep(0.05)\n"
              f"print(open({path!r}).read() == str(os.getpid()), flush=True)")
    proc = guard(f"--save_pid={launcher_pid}", "--", sys.executable, "-c", script)
    out = proc.stdout.read()   # stdin stays open: closing it would stop the command
    assert proc.wait(timeout=60) == 0 and out == b"True\n"
    proc.stdin.close()
    assert not os.path.exists(path)


def test_bad_usage_and_a_missing_command():
    for argv, message in ((["x"], b"usage: python -m accelops.launcher.guard"),
                          (["--grace=soon", "--", "true"], b"bad option '--grace=soon'"),
                          (["--"], b"no command after '--'")):
        proc = guard(*argv)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and message in err
    proc = guard("--", "/nonexistent/program")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 127 and b"cannot run '/nonexistent/program'" in err


def test_parse_args():
    assert parse_args(["--grace=1.5", "--save_pid=12", "--node=n", "--", "a", "--", "b"]) == (1.5, 12, "n", None,
                                                                                            ["a", "--", "b"])
    assert parse_args(["--parent=77", "--", "a"])[3:] == (77, ["a"])
    with pytest.raises(ValueError, match="--parent=x"):
        parse_args(["--parent=x", "--", "a"])
    with pytest.raises(ValueError, match="--save_pid=0"):
        parse_args(["--save_pid=0", "--", "a"])


def test_with_parent_the_guard_stops_the_command_when_its_parent_dies(marker):
    """--parent: a launcher killed by SIGKILL (no stdin involved) still takes the command with it."""
    launcher = ("import subprocess, sys\n"
                "subprocess.Popen([sys.executable, '-m', 'accelops.launcher.guard', f'--parent={__import__(\"os\").getpid()}',"
                " '--', sys.executable, '-c', sys.argv[1], sys.argv[2]], stdin=subprocess.DEVNULL).wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", launcher, TREE, marker], stdout=subprocess.PIPE)
    _wait_line(proc, "tree up")
    deadline = time.monotonic() + 60
    while len(processes_with(marker)) < 4:   # launcher, guard, command, grandchild
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []


def test_with_parent_the_command_reads_the_guards_stdin():
    proc = guard(f"--parent={os.getpid()}", "--", sys.executable, "-c", "print(input()[::-1], flush=True)")
    out, _ = proc.communicate(b"olleh\n", timeout=60)
    assert proc.returncode == 0 and out == b"hello\n"
