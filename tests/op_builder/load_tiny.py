"""Subprocess helper: load the tiny op and print its tier and a scaled list (``--no-compile`` forbids building)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if "--no-compile" in sys.argv:  # a warm load must not build, spawn a process or probe a compiler
    import subprocess

    import torch.utils.cpp_extension as cpp_extension

    def forbidden(*args, **kwargs):
        raise AssertionError("a warm cache hit compiled or spawned a process")

    cpp_extension.load = forbidden
    subprocess.Popen = forbidden

from tiny_builder import TinyBuilder  # noqa: E402

module = TinyBuilder().load(verbose=False)
print(module.tier(), module.scale(2.5), module.__file__)
