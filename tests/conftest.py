"""Shared fixtures: every test starts with no accelerator chosen and no DS_ACCELERATOR set, and records
of the non-propagating "accelops" logger reach pytest's ``caplog``."""
import pytest


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
