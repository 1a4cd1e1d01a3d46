"""setup.py's side of prebuilds: ``DS_BUILD_OPS=1`` / ``DS_BUILD_<OP>=1|0`` -> extensions + build_info.json.

Imported by setup.py from the source tree (as ``accelops.op_builder``). Without a ``DS_BUILD_*`` variable
it imports no torch and only makes sure no compiled op of an earlier build ships; with one it plans the
prebuild, builds ops and tiers in parallel, requires ``torch>=`` the ABI floor of the torch it was built
with, and tags the wheel for its platform only (the libraries bind through torch's stable C ABI: no Python
ABI in them, so one wheel serves every Python 3).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path

from setuptools.command.build_py import build_py

from . import all_ops, prebuilt

NO_TORCH = ("DS_BUILD_* is set, but torch is not importable in this build environment ({error}). pip builds in an "
            "isolated environment by default: install torch first, then use `pip install --no-build-isolation .` "
            "(or `pip wheel --no-build-isolation .`, `python -m build --wheel --no-isolation`)")
#: The wheel's requirements; a prebuild raises the torch floor to the ABI floor of the torch it was built with.
#: torch 2.13 is the first whose stable ABI has all the kernels need (the current-stream accessor of
#: torch/csrc/stable/accelerator.h for the CUDA ops; ops on tensor lists).
TORCH_FLOOR = "2.13"
#: numpy: torch does not require it, but warns "Failed to initialize NumPy" at every import without it.
#: xxhash: the checksums of checkpoint files (accelops/runtime/checkpoint_checksums.py).
REQUIREMENTS = [f"torch>={TORCH_FLOOR}", "numpy", "py-cpuinfo", "ninja", "xxhash"]


def say(message: str) -> None:
    """Print a prebuild message where the user sees it: pip hides a build's output unless it fails or runs
    with -v, so the message also goes to the terminal when there is one."""
    line = f"accelops prebuild: {message}"
    print(line, file=sys.stderr)
    try:
        with open("CONOUT$" if sys.platform == "win32" else "/dev/tty", "w") as tty:
            tty.write(line + "\n")
    except OSError:
        pass


def _remove_prebuilt(package: Path) -> None:
    shutil.rmtree(package / "prebuilt", ignore_errors=True)
    (package / prebuilt.BUILD_INFO).unlink(missing_ok=True)


class CleanBuildPy(build_py):
    """build_py that first removes compiled ops and build_info.json an earlier build left in ``build/``, so a
    wheel holds exactly the ops this build's build_info.json lists (none without DS_BUILD_*)."""

    def run(self) -> None:
        _remove_prebuilt(Path(self.build_lib) / "accelops")
        super().run()


def _accelerator_name() -> str:
    from accelops.accelerator import get_accelerator

    return get_accelerator().name


def _jobs() -> int:
    try:
        return max(1, int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1))
    except ValueError:
        raise SystemExit(f"MAX_JOBS={os.environ['MAX_JOBS']!r} is not a number of parallel jobs") from None


def _build_ops_command(info: dict):
    from torch.utils.cpp_extension import BuildExtension

    class BuildOps(BuildExtension):
        """torch's BuildExtension without ``-g``: ops and tiers build in parallel (``-j``, default ``MAX_JOBS`` or
        the core count), each extension in its own build folder; writes ``accelops/build_info.json``."""

        _where = threading.local()

        @property
        def build_temp(self):
            return getattr(self._where, "folder", None) or self.__dict__.get("build_temp")

        @build_temp.setter
        def build_temp(self, value):
            self.__dict__["build_temp"] = value

        def finalize_options(self) -> None:
            super().finalize_options()
            if not self.parallel:
                self.parallel = _jobs()

        def build_extensions(self) -> None:
            for attr in ("compiler_so", "compiler_cxx", "linker_so"):
                flags = getattr(self.compiler, attr, None)
                if isinstance(flags, list):
                    setattr(self.compiler, attr, [f for f in flags if f != "-g"])
            super().build_extensions()

        def get_export_symbols(self, ext) -> list:
            return []  # libraries, not Python modules: no PyInit_<name> to export (MSVC would demand one)

        def build_extension(self, ext) -> None:
            # Tiers compile the same sources with other flags: one object folder per extension.
            self._where.folder = os.path.join(self.__dict__["build_temp"], ext.name.rsplit(".", 1)[-1])
            try:
                super().build_extension(ext)
            finally:
                self._where.folder = None

        def run(self) -> None:
            package = Path("accelops") if self.inplace else Path(self.build_lib) / "accelops"
            _remove_prebuilt(package)
            (package / "prebuilt").mkdir(parents=True, exist_ok=True)
            super().run()
            (package / prebuilt.BUILD_INFO).write_text(json.dumps(info, indent=1, sort_keys=True))

    return BuildOps


def _platform_wheel_command():
    """bdist_wheel tagging the wheel ``py3-none-<platform>``: it holds compiled libraries, none tied to a
    Python version or ABI."""
    try:
        from setuptools.command.bdist_wheel import bdist_wheel
    except ImportError:  # setuptools < 70.1: the command lives in the wheel package
        from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        def finalize_options(self) -> None:
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    return PlatformWheel


def setup_kwargs(csrc_rel: str = "csrc") -> dict:
    """``cmdclass``, ``install_requires`` and, when ``DS_BUILD_*`` asks for a prebuild, ``ext_modules``.

    Prints what is built and why ops are skipped (also on the terminal); raises ``SystemExit`` when torch
    is missing, ``ValueError`` for an unknown ``DS_BUILD_<NAME>=1`` or a foreign tier, and ``OpBuildError``
    when a forced ``DS_BUILD_<OP>=1`` cannot be built.
    """
    plain = {"cmdclass": {"build_py": CleanBuildPy}, "install_requires": REQUIREMENTS}
    if not prebuilt.requested():
        return plain
    try:
        import torch
    except ImportError as exc:
        raise SystemExit(NO_TORCH.format(error=exc)) from None
    from . import toolchain

    adopted = toolchain.adopt_developer_prompt()
    if adopted:
        say(adopted)
    ops = all_ops()
    chosen, notes = prebuilt.plan(ops)
    for note in notes:
        say(note)
    if not chosen:
        say("DS_BUILD_* asked for prebuilt ops, but none can be built here (reasons above); the package installs "
            "without them and ops build on first use")
        return plain
    for name, variants in chosen.items():
        say(f"building {name} ({', '.join(variants)})")
    info = prebuilt.build_info(ops, chosen, _accelerator_name())
    floor = [f"torch>={info['abi_floor']}"] + [r for r in REQUIREMENTS if not r.startswith("torch")]
    return {"ext_modules": prebuilt.extensions(ops, chosen, csrc_rel), "install_requires": floor,
            "cmdclass": {"build_py": CleanBuildPy, "build_ext": _build_ops_command(info),
                         "bdist_wheel": _platform_wheel_command()}}
