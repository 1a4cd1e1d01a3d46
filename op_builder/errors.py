"""The build engine's results and errors: ``Compatibility`` (can it build here, and why not) and ``OpBuildError``."""
from __future__ import annotations

from typing import Iterable, List


class OpBuildError(RuntimeError):
    """An op could not be loaded: not compatible, failed to compile, or failed to import."""


class Compatibility:
    """Truthy when the op can be built here; ``reasons`` says why not, ``warnings`` what to watch."""

    def __init__(self, reasons: Iterable[str] = (), warnings: Iterable[str] = ()) -> None:
        self.reasons: List[str] = list(reasons)
        self.warnings: List[str] = list(warnings)

    def __bool__(self) -> bool:
        return not self.reasons

    def __repr__(self) -> str:
        return f"Compatibility(ok={bool(self)}, reasons={self.reasons!r}, warnings={self.warnings!r})"
