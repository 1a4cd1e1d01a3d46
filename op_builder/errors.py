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

    @classmethod
    def of(cls, answer: object, name: str) -> "Compatibility":
        """A builder's ``is_compatible()`` answer as a ``Compatibility``: DeepSpeed-style builders may answer with
        a plain bool (False becomes one reason naming the op ``name``)."""
        if isinstance(answer, Compatibility):
            return answer
        return cls() if answer else cls([f"{name}'s is_compatible() returned {answer!r}"])

    def __bool__(self) -> bool:
        return not self.reasons

    def __repr__(self) -> str:
        return f"Compatibility(ok={bool(self)}, reasons={self.reasons!r}, warnings={self.warnings!r})"
