"""The host compiler and tools the engine builds with: which command, whether it runs, and cheap identities.

Nothing here imports torch; ``probe_version`` runs each command at most once per process.
"""
from __future__ import annotations

import functools
import os
import shlex
import subprocess
from typing import Optional, Tuple


def is_msvc() -> bool:
    """True where torch's extension builder compiles with MSVC (Windows)."""
    return os.name == "nt"


def empty_cxx() -> bool:
    """True when ``CXX`` is set to an empty (or blank) value: torch would run that as the compiler, so builds
    fail; accelops reports it as a reason instead of treating it as unset."""
    return "CXX" in os.environ and not os.environ["CXX"].strip()


def compiler_command() -> str:
    """The host compiler torch's extension builder uses: ``$CXX``, else ``c++`` (``cl`` on Windows).

    May hold arguments (``ccache g++``); ``compiler_executable()`` is its first word. An empty ``CXX`` is
    shown as ``''`` (see ``empty_cxx``).
    """
    if empty_cxx():
        return "''"
    return os.environ.get("CXX") or ("cl" if is_msvc() else "c++")


def compiler_words() -> Tuple[str, ...]:
    """``compiler_command()`` split into words (``("ccache", "g++")``)."""
    return tuple(shlex.split(compiler_command(), posix=os.name != "nt")) or (compiler_command(),)


def compiler_executable() -> str:
    """The program of ``compiler_command()`` (``ccache`` for ``CXX="ccache g++"``)."""
    return compiler_words()[0]


@functools.lru_cache(maxsize=None)
def probe_version(command: Tuple[str, ...]) -> Tuple[Optional[str], str]:
    """``(problem, output)`` of running ``command + ("--version",)`` once per process: ``problem`` is None
    when it ran and exited 0, else why not. Used for the C++ compiler and by ds_report's tool rows."""
    shown = " ".join(command)
    try:
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, errors="replace",
                                timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`{shown} --version` failed: {exc}", ""
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        return f"`{shown} --version` exited {result.returncode}", output
    return None, output


@functools.lru_cache(maxsize=None)
def probe_msvc(command: Tuple[str, ...]) -> Tuple[Optional[str], str]:
    """``(problem, output)`` of running MSVC's ``cl`` without arguments once per process: it has no
    ``--version`` (that is an error to it) but prints its banner, "Microsoft (R) C/C++ Optimizing Compiler
    Version ...", on stderr. ``problem`` is None when the banner came, else why not."""
    shown = " ".join(command)
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, errors="replace", timeout=60,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`{shown}` failed: {exc}", ""
    output = (result.stderr + result.stdout).strip()
    if "Microsoft" not in output or "Compiler" not in output:
        return f"`{shown}` printed no MSVC compiler banner (exit {result.returncode})", output
    return None, output


def probe_compiler() -> Tuple[Optional[str], str]:
    """``(problem, output)`` of the host compiler's version probe: ``--version`` for gcc/clang, the banner for
    MSVC. Run once per process."""
    return probe_msvc(compiler_words()) if is_msvc() else probe_version(compiler_words())


def tool_identity(path: Optional[str]) -> str:
    """Cheap identity of an executable (resolved path, size, mtime): no subprocess."""
    if not path:
        return "missing"
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return f"{real}:unreadable"
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"
