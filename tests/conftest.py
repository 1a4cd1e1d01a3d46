"""Shared fixtures: every test starts with no accelerator chosen and no DS_ACCELERATOR set, and records
of the non-propagating "accelops" logger reach pytest's ``caplog``; ``world_of_one`` for the tests that
initialise a process group in the test process. Puts ``tests/`` on ``sys.path`` (whatever pytest's import
mode), so every test folder imports the shared helpers as ``helpers``."""
import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import helpers  # noqa: E402 - needs TESTS on sys.path


@pytest.fixture(autouse=True)
def fresh_accelerator(monkeypatch):
    """Forget any chosen accelerator before and after each test."""
    from accelops.accelerator import reset_accelerator

    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    reset_accelerator()
    yield
    reset_accelerator()


@pytest.fixture(autouse=True)
def accelops_log_reaches_caplog(caplog):
    """The "accelops" logger has its own stderr handler and does not propagate (accelops/_logging.py), so
    ``caplog``'s handler on the root logger (pytest 8.x) would see its records only before the first
    ``get_logger`` call. Set it up now, so every test sees the same set-up, and give it ``caplog``'s handler."""
    from accelops._logging import get_logger

    logger = get_logger()  # sets the logger up once per process
    logger.addHandler(caplog.handler)
    yield
    logger.removeHandler(caplog.handler)


@pytest.fixture
def world_of_one():
    """No launcher variables, the CPU accelerator; afterwards the process group the test made is destroyed
    and the environment restored (:func:`helpers.world_of_one`)."""
    with helpers.world_of_one():
        yield
