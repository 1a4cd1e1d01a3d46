"""Fixtures of the engine tests that run in the test process (a world of one)."""
import os

import pytest

from engine_workers import LAUNCH_VARS


@pytest.fixture
def world_of_one():
    """No launcher variables, the CPU accelerator; afterwards the process group that initialize() made is
    destroyed and the environment restored."""
    from accelops import comm
    from accelops.accelerator import reset_accelerator

    saved = dict(os.environ)
    for name in LAUNCH_VARS:
        os.environ.pop(name, None)
    os.environ["DS_ACCELERATOR"] = "cpu"
    reset_accelerator()
    yield
    comm.destroy()
    os.environ.clear()
    os.environ.update(saved)
