"""Stand-ins shared by the launcher tests."""


class FakeAccelerator:
    """Only what the launcher asks an accelerator: name, device count, variable names."""

    def __init__(self, name="cuda", count=4, visible=("CUDA_VISIBLE_DEVICES",), prefixes=("NCCL", "CUDA")):
        self.name, self._count, self._visible, self._prefixes = name, count, list(visible), list(prefixes)

    def device_count(self):
        return self._count

    def visible_devices_envs(self):
        return list(self._visible)

    def export_envs(self):
        return list(self._prefixes)


# -- running ds_launch against stand-in nodes -------------------------------------------------------
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from helpers import launch_free_environ  # noqa: E402

STANDINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standins")
#: What ds_launch reads besides the launch variables: the devices here, its environment file, pdsh's settings.
LAUNCHER_INPUTS = ("CUDA_VISIBLE_DEVICES", "DS_ENV_FILE", "PDSH_SSH_ARGS_APPEND", "PDSH_RCMD_TYPE")


def clean_env(**extra):
    """This process's environment without launcher variables (``helpers.LAUNCH_VARS`` and prefixes, and
    :data:`LAUNCHER_INPUTS`), on the CPU accelerator, plus ``extra``."""
    env = {k: v for k, v in launch_free_environ().items() if k not in LAUNCHER_INPUTS}
    env.update(DS_ACCELERATOR="cpu", **extra)
    return env


def install_standins(bin_dir, names=("ssh", "pdsh", "srun")):
    """Executables ``bin_dir/NAME`` that run ``standins/NAME.py`` with this Python; returns ``bin_dir``."""
    os.makedirs(bin_dir, exist_ok=True)
    for name in names:
        path = os.path.join(bin_dir, name)
        with open(path, "w") as fd:
            fd.write(f'#!/bin/sh\nexec "{sys.executable}" "{os.path.join(STANDINS, name + ".py")}" "$@"\n')
        os.chmod(path, 0o755)
    return str(bin_dir)


def processes_with(marker):
    """``[(pid, command line)]`` of the live processes whose command line contains ``marker`` (a /proc
    scan; zombies have an empty command line and do not count)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fd:
                cmdline = fd.read()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append((int(name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def survivors(marker, within):
    """The processes with ``marker`` still alive after up to ``within`` seconds (empty: none)."""
    deadline = time.monotonic() + within
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_with(marker)


def kill_marked(marker):
    """SIGKILL every process left with ``marker`` (a test's clean-up)."""
    for pid, _ in processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def launch(argv, cwd, env, timeout=180, **popen):
    """``python -m accelops.launcher ARGV`` in ``cwd``: a CompletedProcess (or, with popen args, a Popen)."""
    command = [sys.executable, "-m", "accelops.launcher", *argv]
    if popen:
        return subprocess.Popen(command, cwd=cwd, env=env, **popen)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
