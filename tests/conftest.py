"""Shared fixtures: every test starts with no accelerator chosen and no DS_ACCELERATOR set, and records
of the non-propagating "accelops" logger reach pytest's ``caplog``."""
import logging

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
    """The "accelops" logger has its own stderr handler and does not propagate (op_builder/messages.py),
    so ``caplog``'s handler on the root logger would see its records only before that module is first
    imported. Configure it now, so every test sees the same set-up, and give it ``caplog``'s handler."""
    import op_builder.messages  # noqa: F401  (configures the logger once per process)

    logger = logging.getLogger("accelops")
    logger.addHandler(caplog.handler)
    yield
    logger.removeHandler(caplog.handler)
