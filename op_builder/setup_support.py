"""setup.py's side of prebuilds: ``DS_BUILD_OPS=1`` / ``DS_BUILD_<OP>=1|0`` -> extensions + build_info.json.

Used from a source tree where ``op_builder`` and ``accelerator`` are top-level packages (setup.py puts
its folder first on ``sys.path``). Only called when a ``DS_BUILD_*`` variable is set.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import all_ops, prebuilt

NO_TORCH = ("DS_BUILD_* is set, but torch is not importable in this build environment ({error}). pip builds in an "
            "isolated environment by default: install torch first, then use `pip install --no-build-isolation .` "
            "(or `pip wheel --no-build-isolation .`, `python -m build --wheel --no-isolation`)")


def _accelerator_name() -> str:
    from accelerator import get_accelerator  # the source tree's accelerator/ package

    return get_accelerator().name


def setup_kwargs(csrc_rel: str = "csrc") -> dict:
    """``ext_modules`` and ``cmdclass`` for ``setup()``; empty when no ``DS_BUILD_*`` asks for a prebuild.

    Prints what is built and why ops are skipped; raises ``SystemExit`` when torch is missing and
    ``OpBuildError`` when a forced ``DS_BUILD_<OP>=1`` cannot be built.
    """
    if not prebuilt.requested():
        return {}
    try:
        import torch  # noqa: F401
        from torch.utils.cpp_extension import BuildExtension
    except ImportError as exc:
        raise SystemExit(NO_TORCH.format(error=exc)) from None
    ops = all_ops()
    chosen, notes = prebuilt.plan(ops)
    for note in notes:
        print(f"accelops prebuild: {note}")
    for name, variants in chosen.items():
        print(f"accelops prebuild: building {name} ({', '.join(variants)})")
    if not chosen:
        return {}
    info = prebuilt.build_info(chosen, _accelerator_name())

    class BuildOps(BuildExtension):
        """torch's BuildExtension without ``-g``, writing ``accelops/build_info.json`` next to the ops."""

        def build_extensions(self) -> None:
            for attr in ("compiler_so", "compiler_cxx", "linker_so"):
                flags = getattr(self.compiler, attr, None)
                if isinstance(flags, list):
                    setattr(self.compiler, attr, [f for f in flags if f != "-g"])
            super().build_extensions()

        def run(self) -> None:
            super().run()
            target = Path("accelops") if self.inplace else Path(self.build_lib) / "accelops"
            target.mkdir(parents=True, exist_ok=True)
            (target / prebuilt.BUILD_INFO).write_text(json.dumps(info, indent=1, sort_keys=True))

    return {"ext_modules": prebuilt.extensions(ops, chosen, csrc_rel), "cmdclass": {"build_ext": BuildOps}}
