"""Build messages go through the "accelops" logger: shown on stderr by default, silenced or routed by logging."""
import logging

import pytest

from accelops.op_builder.messages import DefaultHandler, log
from accelops.op_builder.progress import Progress


@pytest.fixture
def accelops_logger():
    """The accelops logger, restored after the test."""
    saved = (log.level, list(log.handlers), log.propagate)
    yield log
    log.setLevel(saved[0])
    log.handlers[:] = saved[1]
    log.propagate = saved[2]


def test_progress_shows_on_stderr_by_default(accelops_logger, capsys):
    assert any(isinstance(h, DefaultHandler) for h in accelops_logger.handlers)
    with Progress("accelops: building op demo (scalar)"):
        pass
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "accelops: building op demo (scalar) ..."
    assert err[1].startswith("accelops: building op demo (scalar) ... done in ")


def test_the_level_silences_it(accelops_logger, capsys):
    accelops_logger.setLevel(logging.ERROR)
    with Progress("accelops: building op demo (scalar)"):
        pass
    assert capsys.readouterr().err == ""


def test_own_handlers_route_it(accelops_logger, capsys):
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    accelops_logger.handlers[:] = [Keep()]
    with pytest.raises(RuntimeError):
        with Progress("accelops: building op demo (scalar)"):
            raise RuntimeError("compiler failed")
    assert capsys.readouterr().err == ""
    assert records[0] == "accelops: building op demo (scalar) ..."
    assert records[1].startswith("accelops: building op demo (scalar) ... failed in ")
