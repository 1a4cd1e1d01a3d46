"""Maps accelerator/, op_builder/ and csrc/ into the accelops package; DS_BUILD_* prebuilds hook in here.

The package list is derived from the folders (every folder with an ``__init__.py`` under a mapped root),
never kept by hand. Nothing is compiled, and torch is not imported, unless a DS_BUILD_* variable asks.
"""
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

#: package -> folder of its sources, relative to this file. Subpackages follow their folders.
ROOTS = {"accelops": "accelops", "accelops.accelerator": "accelerator", "accelops.op_builder": "op_builder"}
CSRC = "csrc"  # shipped as the data package accelops.csrc, so JIT builds work from a wheel


def derived_packages():
    """Every package under ``ROOTS``, plus ``accelops.csrc``: ``(packages, package_dir)``."""
    packages = []
    for name, folder in ROOTS.items():
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(where=os.path.join(HERE, folder))]
    return packages + ["accelops.csrc"], {**ROOTS, "accelops.csrc": CSRC}


def source_tree_engine():
    """The source tree's build engine as ``accelops.op_builder`` (and its accelerator layer as
    ``accelops.accelerator``): the folders are mapped in the installed package, so here the source
    ``accelops`` package also searches this folder for its subpackages."""
    sys.path.insert(0, HERE)
    import accelops

    accelops.__path__.append(HERE)
    from accelops.op_builder import setup_support

    return setup_support


packages, package_dir = derived_packages()
setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"accelops.csrc": ["**/*.cpp", "**/*.cu", "**/*.h", "**/*.cuh"]},
    include_package_data=False,
    **source_tree_engine().setup_kwargs(CSRC),
)
