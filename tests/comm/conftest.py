"""Fixtures of the comm tests."""
import os

import pytest

from accelops import comm
from accelops.accelerator import reset_accelerator
from comm_workers import _LAUNCH_VARS


@pytest.fixture
def clean_launch_env():
    """No launcher variables from the outside, the CPU accelerator (gloo, also on a GPU host); afterwards
    the process group is destroyed and whatever init_distributed exported is undone."""
    saved = dict(os.environ)
    for name in _LAUNCH_VARS:
        os.environ.pop(name, None)
    os.environ["DS_ACCELERATOR"] = "cpu"
    reset_accelerator()
    yield
    comm.destroy()
    os.environ.clear()
    os.environ.update(saved)
