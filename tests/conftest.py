"""Shared fixtures: every test starts with no accelerator chosen and no DS_ACCELERATOR set."""
import pytest


@pytest.fixture(autouse=True)
def fresh_accelerator(monkeypatch):
    """Forget any chosen accelerator before and after each test."""
    from accelops.accelerator import reset_accelerator

    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    reset_accelerator()
    yield
    reset_accelerator()
