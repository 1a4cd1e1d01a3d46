"""Fixtures of the launcher tests: a stand-in accelerator and a way to build plans from flags."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from launcher_fakes import FakeAccelerator  # noqa: E402 - needs HERE on sys.path


@pytest.fixture
def script(tmp_path):
    """An existing user script in a fresh working folder."""
    path = tmp_path / "train.py"
    path.write_text("print('train')\n")
    return path


@pytest.fixture
def plan_for(tmp_path, script):
    """``plan_for(*flags, environ=..., accelerator=..., which=...)``: the plan of ``ds_launch flags train.py``."""
    from accelops.launcher.cli import parser
    from accelops.launcher.plan import build_plan

    def make(*flags, environ=None, accelerator=None, which=lambda name: None, user=("train.py",), local=None):
        args = parser().parse_args([*flags, *user])
        return build_plan(args, environ=environ or {}, cwd=str(tmp_path), home=str(tmp_path / "home"),
                          accelerator=accelerator or FakeAccelerator(), which=which,
                          is_local=local or (lambda host: host == "localhost"))
    return make


@pytest.fixture
def hostfile(tmp_path):
    """``hostfile(text)``: write a hostfile and return its path."""
    def write(text):
        path = tmp_path / "hostfile"
        path.write_text(text)
        return str(path)
    return write
