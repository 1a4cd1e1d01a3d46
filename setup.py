"""Maps accelerator/, op_builder/ and csrc/ into the accelops package.

Ahead-of-time op builds (DS_BUILD_OPS=1 / DS_BUILD_<OP>=1) hook in here; nothing is
compiled, and torch is not imported, unless one of those variables asks for it.
"""
import os
import sys

from setuptools import setup

PACKAGE_DIR = {
    "accelops": "accelops",
    "accelops.ops": "accelops/ops",
    "accelops.accelerator": "accelerator",
    "accelops.op_builder": "op_builder",
    "accelops.csrc": "csrc",
}

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from op_builder.setup_support import setup_kwargs  # noqa: E402  (source tree's engine; imports nothing heavy)

setup(
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    package_data={"accelops.csrc": ["**/*.cpp", "**/*.cu", "**/*.h", "**/*.cuh"]},
    include_package_data=False,
    **setup_kwargs(),
)
