"""The host compiler and tools the engine builds with: which command, whether it runs, and cheap identities.

On Windows the compiler is MSVC's ``cl``, found the way torch's JIT builder finds it: on PATH inside a
developer prompt, else in the Visual Studio environment setuptools locates (torch activates that environment
for its builds). Nothing here imports torch; each probe runs at most once per process.
"""
from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from typing import Dict, Optional, Tuple

#: setuptools' platform -> the vcvarsall argument, as torch's ``PLAT_TO_VCVARS`` maps it.
VC_PLATFORMS = {"win32": "x86", "win-amd64": "x86_amd64"}
DEVELOPER_PROMPT_ENV = "VSCMD_ARG_TGT_ARCH"  # set by vcvarsall / a "Native Tools Command Prompt"
NO_MSVC = ("MSVC's `cl` is not on PATH and {how}. Install Visual Studio or its Build Tools with the \"Desktop "
           "development with C++\" workload, or run from an \"x64 Native Tools Command Prompt\"")


def is_msvc() -> bool:
    """True where torch's extension builder compiles with MSVC (Windows)."""
    return sys.platform == "win32"


def in_developer_prompt() -> bool:
    """True inside a Visual Studio developer prompt (its compiler environment is already active)."""
    return DEVELOPER_PROMPT_ENV in os.environ


def _setuptools_vc_env():
    """setuptools' private ``_get_vc_env`` (torch's JIT builder calls the same), from where this setuptools
    keeps it."""
    try:
        from setuptools._distutils.compilers.C.msvc import _get_vc_env  # setuptools >= 74
    except ImportError:
        from setuptools._distutils._msvccompiler import _get_vc_env
    return _get_vc_env


@functools.lru_cache(maxsize=None)
def visual_studio_env() -> Tuple[Optional[Dict[str, str]], str]:
    """``(environment, note)``: the Visual Studio compiler environment setuptools finds (vcvarsall for this
    platform) merged over ``os.environ``, as torch's JIT builder activates it outside a developer prompt;
    ``None`` and why not when there is none. Runs vcvarsall once per process."""
    platform_name = sysconfig.get_platform()
    spec = VC_PLATFORMS.get(platform_name)
    if spec is None:
        return None, f"torch has no Visual Studio environment for platform {platform_name}"
    try:
        found = _setuptools_vc_env()(spec)
    except ImportError as exc:
        return None, f"this setuptools cannot look for Visual Studio ({exc})"
    except Exception as exc:  # DistutilsPlatformError: no vcvarsall.bat
        return None, f"setuptools found no Visual Studio C++ build tools ({exc})"
    env = {key.upper(): value for key, value in found.items()}
    for key, value in os.environ.items():
        env.setdefault(key.upper(), value)
    return env, f"Visual Studio environment found by setuptools ({spec})"


def build_path() -> Optional[str]:
    """The PATH builds run with: ``None`` for this process's own, else (Windows outside a developer prompt) the
    Visual Studio environment's."""
    if not is_msvc() or in_developer_prompt():
        return None
    env, _ = visual_studio_env()
    return env.get("PATH") if env else None


def adopt_developer_prompt() -> Optional[str]:
    """Windows, inside a developer prompt, ``DISTUTILS_USE_SDK`` unset: set it to 1, so setuptools compiles with
    the prompt's ``cl`` instead of activating Visual Studio a second time (torch's BuildExtension stops the
    build otherwise). Returns a note saying so, or None when nothing was changed. Side effect: ``os.environ``."""
    if not is_msvc() or not in_developer_prompt() or "DISTUTILS_USE_SDK" in os.environ:
        return None
    os.environ["DISTUTILS_USE_SDK"] = "1"
    return (f"using the developer prompt's compiler ({DEVELOPER_PROMPT_ENV}={os.environ[DEVELOPER_PROMPT_ENV]}): "
            f"set DISTUTILS_USE_SDK=1")


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
    return tuple(shlex.split(compiler_command(), posix=not is_msvc())) or (compiler_command(),)


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
def probe_msvc(command: Tuple[str, ...], path: Optional[str] = None) -> Tuple[Optional[str], str]:
    """``(problem, output)`` of running MSVC's ``cl`` without arguments once per process (with ``path`` as PATH
    when given): it has no ``--version`` (that is an error to it) but prints its banner, "Microsoft (R) C/C++
    Optimizing Compiler Version ...", on stderr. ``problem`` is None when the banner came, else why not."""
    shown = " ".join(command)
    env = None if path is None else {**os.environ, "PATH": path}
    program = shutil.which(command[0], path=path) or command[0]
    try:
        result = subprocess.run([program, *command[1:]], capture_output=True, text=True, errors="replace",
                                timeout=60, stdin=subprocess.DEVNULL, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`{shown}` failed: {exc}", ""
    output = (result.stderr + result.stdout).strip()
    if "Microsoft" not in output or "Compiler" not in output:
        return f"`{shown}` printed no MSVC compiler banner (exit {result.returncode})", output
    return None, output


def probe_compiler() -> Tuple[Optional[str], str]:
    """``(problem, output)`` of the host compiler's version probe: ``--version`` for gcc/clang, the banner for
    MSVC. Run once per process."""
    return probe_msvc(compiler_words(), build_path()) if is_msvc() else probe_version(compiler_words())


def compiler_path() -> Optional[str]:
    """Where the compiler program lives (PATH, or on Windows the Visual Studio environment's); None if nowhere."""
    return shutil.which(compiler_executable(), path=build_path())


def _why_no_cl() -> str:
    if in_developer_prompt():
        return f"{DEVELOPER_PROMPT_ENV} is set, but the prompt's PATH holds no cl"
    env, note = visual_studio_env()
    return f"{note}, whose PATH holds no cl" if env else note


def compiler_problem() -> Optional[str]:
    """Why the host compiler cannot build here (empty ``CXX``, not found, does not run), or None."""
    if empty_cxx():
        return "CXX is set but empty: torch's extension builder would run an empty command; unset CXX or set it to a " \
               "compiler"
    compiler = compiler_executable()
    if compiler_path() is None:
        if is_msvc() and not os.environ.get("CXX"):
            return "no C++ compiler: " + NO_MSVC.format(how=_why_no_cl())
        return (f"no C++ compiler: `{compiler}` (from CXX or the default) is not on PATH; install one (e.g. g++) or "
                f"set CXX to its path")
    problem, _ = probe_compiler()
    if problem:
        return f"the C++ compiler does not run: {problem}; fix it or set CXX to a working one"
    return None


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
