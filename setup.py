"""Maps accelerator/, op_builder/ and csrc/ into the accelops package.

Ahead-of-time op builds (DS_BUILD_OPS=1 / DS_BUILD_<OP>=1) hook in here; nothing is
compiled, and torch is not imported, unless one of those variables asks for it.
"""
from setuptools import setup

PACKAGE_DIR = {
    "accelops": "accelops",
    "accelops.ops": "accelops/ops",
    "accelops.accelerator": "accelerator",
    "accelops.op_builder": "op_builder",
    "accelops.csrc": "csrc",
}

setup(
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    package_data={"accelops.csrc": ["**/*.cpp", "**/*.cu", "**/*.h", "**/*.cuh"]},
    include_package_data=False,
)
