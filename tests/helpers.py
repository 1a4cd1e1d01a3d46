"""Helpers shared by the test folders, written once: a free port, an environment without launcher
variables (in a child's environment, or in this process for a test), running processes under one
deadline, whether Open MPI's mpirun is here, and a fused optimizer op whose build fails.

Importable as ``helpers`` from every test module: ``tests/conftest.py`` puts ``tests/`` on
``sys.path``. Worker scripts run as programs (``python comm_workers.py``) do not have it there, so
they import this module only in the functions the tests call.
"""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from accelops.comm.env_mapping import launch_var_names

#: Every variable that makes a process think it was launched: those ``init_distributed`` reads
#: (accelops.comm.env_mapping), the launcher's ``LOCAL_SIZE`` and torchrun's agent-store switch.
LAUNCH_VARS = frozenset(launch_var_names()) | {"LOCAL_SIZE", "TORCHELASTIC_USE_AGENT_STORE"}
#: Prefixes of the variables Open MPI, PMI (MPICH, Intel MPI), SLURM and torchrun set for their ranks.
LAUNCH_PREFIXES = ("OMPI_", "PMI_", "SLURM_", "TORCHELASTIC_")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_launch_var(name: str) -> bool:
    """Whether ``name`` is one of :data:`LAUNCH_VARS` or starts with one of :data:`LAUNCH_PREFIXES`."""
    return name in LAUNCH_VARS or name.startswith(LAUNCH_PREFIXES)


def launch_free_environ(environ: Optional[Mapping[str, str]] = None, **extra: str) -> Dict[str, str]:
    """``environ`` (default: this process's environment) without launcher variables, plus ``extra``:
    the environment of a child that must start as the tests say, not as an outer launcher did."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if not is_launch_var(k)}
    env.update(extra)
    return env


@contextlib.contextmanager
def world_of_one(accelerator: Optional[str] = "cpu") -> Iterator[None]:
    """For the duration: no launcher variables in this process and ``DS_ACCELERATOR=accelerator``
    (``None``: left as it is), with no accelerator chosen yet; afterwards the process group is
    destroyed and the environment restored."""
    from accelops import comm
    from accelops.accelerator import reset_accelerator

    saved = dict(os.environ)
    for name in [name for name in os.environ if is_launch_var(name)]:
        del os.environ[name]
    if accelerator is not None:
        os.environ["DS_ACCELERATOR"] = accelerator
        reset_accelerator()
    try:
        yield
    finally:
        comm.destroy()
        os.environ.clear()
        os.environ.update(saved)


def run_all(commands: Sequence[Tuple[Sequence[str], Mapping[str, str]]],
            timeout_s: float) -> List[Tuple[Optional[int], str, str]]:
    """Start every ``(argv, env)`` in a session of its own, wait at most ``timeout_s`` for all of them
    together, then kill the process group of each one still running. Returns ``(returncode, stdout,
    stderr)`` per command, in order; a killed one has returncode ``None``."""
    procs = [subprocess.Popen(list(argv), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for argv, env in commands]
    deadline = time.monotonic() + timeout_s
    results = []
    try:
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
                results.append((proc.returncode, out, err))
            except subprocess.TimeoutExpired:
                results.append((None, "", f"killed after {timeout_s} s"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return results


def is_open_mpi() -> bool:
    """Whether the ``mpirun`` on ``PATH`` is Open MPI's."""
    mpirun = shutil.which("mpirun")
    if not mpirun:
        return False
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Open MPI" in out or "OpenRTE" in out


def fail_fused_build(monkeypatch, step) -> List[str]:
    """For this test, loading the extension of ``step`` (an ``accelops.ops.fused_step.FusedStep``) fails with
    "nvcc not found": its builder's load raises, its loader and one-time warnings start afresh, and the
    failure is forgotten again after the test. Returns the builder class names whose load was tried."""
    calls: List[str] = []

    def no_compiler(self, verbose=True):
        calls.append(type(self).__name__)
        raise RuntimeError("nvcc not found")

    monkeypatch.setattr(step.loader.builder_class, "load_with_origin", no_compiler)
    step.loader.reset()
    monkeypatch.setattr(step.loader, "_failure", None)  # forgotten again after the test
    monkeypatch.setattr(step, "warned", set())
    return calls


def kernel_or_fallback(request, monkeypatch, kernel_fixture: str) -> str:
    """The body of a ``path`` fixture parametrized ``["kernel", "torch"]`` that runs a test on both paths of a
    CPU op: "kernel" builds (or loads) the op through the fixture ``kernel_fixture`` and clears
    ``ACCELOPS_CPU_OPS_FALLBACK``; "torch" sets it, forcing the pure-torch fallback. Returns the parameter."""
    if request.param == "kernel":
        request.getfixturevalue(kernel_fixture)
        monkeypatch.delenv("ACCELOPS_CPU_OPS_FALLBACK", raising=False)
    else:
        monkeypatch.setenv("ACCELOPS_CPU_OPS_FALLBACK", "1")
    return request.param
