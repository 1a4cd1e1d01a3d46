"""The test-only op: a CPUOpBuilder whose csrc/ is tests/op_builder/csrc (or TINY_CSRC)."""
import os
from pathlib import Path

from accelops.op_builder import CPUOpBuilder

HERE_CSRC = Path(__file__).resolve().parent / "csrc"


class TinyBuilder(CPUOpBuilder):
    NAME = "tiny"

    def csrc(self):
        return Path(os.environ.get("TINY_CSRC", HERE_CSRC))

    def sources(self):
        return ["tiny/tiny_op.cpp"]

    def include_paths(self):
        return ["includes"]
