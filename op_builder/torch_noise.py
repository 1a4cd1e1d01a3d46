"""Keep torch's compiler-version probe from printing a traceback next to the engine's own errors.

torch's JIT builder checks the compiler's version before each build (``-dumpfullversion -dumpversion``) and,
when that command fails, logs "Error checking compiler version for <cc>" with a full traceback. The engine
already probes the compiler itself (:func:`op_builder.toolchain.compiler_problem`) and reports a failed build
as one ``OpBuildError``, so during an engine build that record is held back: after a successful build it is
logged as one line (the build worked, but torch could not check the compiler's ABI); after a failed build it
is dropped, the ``OpBuildError`` says what went wrong.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, List

TORCH_LOGGER = "torch.utils.cpp_extension"
VERSION_CHECK_PREFIX = "Error checking compiler version"


class _HoldVersionCheck(logging.Filter):
    """Drops torch's "Error checking compiler version" records, keeping a one-line summary of each."""

    def __init__(self) -> None:
        super().__init__()
        self.held: List[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(VERSION_CHECK_PREFIX):
            return True
        cause = record.exc_info[1] if record.exc_info else None
        summary = record.getMessage() + (f" ({cause})" if cause is not None else "")
        self.held.append(summary)
        return False


@contextlib.contextmanager
def held_compiler_check() -> Iterator[List[str]]:
    """While active, torch's "Error checking compiler version" warnings are not printed; yields the list of
    their one-line summaries (filled as they happen). Other torch records pass unchanged."""
    logger = logging.getLogger(TORCH_LOGGER)
    hold = _HoldVersionCheck()
    logger.addFilter(hold)
    try:
        yield hold.held
    finally:
        logger.removeFilter(hold)
