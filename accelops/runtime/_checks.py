"""Value checks for config keys and constructor arguments (no torch).

A check is a callable ``check(path, value) -> value``: it returns the value, normalised (a list becomes a
tuple, a choice is lower-cased where noted), or raises :class:`ConfigError` whose message names ``path``
and says what was expected and what was given. JSON has no int/float distinction for whole floats, so an
integer check accepts ``8.0`` as 8; ``True``/``False`` are never numbers.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

from .errors import ConfigError

Check = Callable[[str, Any], Any]


def got(value: Any) -> str:
    """``got 'abc' (str)``: the tail of every check message."""
    return f"got {value!r} ({type(value).__name__})"


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def anything(path: str, value: Any) -> Any:
    """Accepts every value (for keys that have no effect here)."""
    return value


def boolean(path: str, value: Any) -> bool:
    """``true`` or ``false``; no 0/1, no strings."""
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, {got(value)}")
    return value


def _bounds(minimum: Optional[float], maximum: Optional[float]) -> str:
    if minimum is not None and maximum is not None:
        return f" between {minimum} and {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""


def integer(minimum: Optional[int] = None, maximum: Optional[int] = None) -> Check:
    """A whole number within [minimum, maximum] (either bound optional); returned as an int."""

    def check(path: str, value: Any) -> int:
        if not is_number(value) or value != int(value) or (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum):
            raise ConfigError(path, f"must be an integer{_bounds(minimum, maximum)}, {got(value)}")
        return int(value)

    return check


def number(minimum: Optional[float] = None, maximum: Optional[float] = None, above: bool = False) -> Check:
    """A finite number within [minimum, maximum]; ``above``: strictly greater than ``minimum``."""

    def check(path: str, value: Any) -> float:
        ok = is_number(value) and (minimum is None or (value > minimum if above else value >= minimum)) and (
            maximum is None or value <= maximum)
        if not ok:
            bound = f" > {minimum}" if above else _bounds(minimum, maximum)
            raise ConfigError(path, f"must be a finite number{bound}, {got(value)}")
        return value

    return check


def number_or_list(minimum: Optional[float] = None) -> Check:
    """A number, or a non-empty list of numbers (one per optimizer param group), each >= minimum."""
    scalar = number(minimum)

    def check(path: str, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if not value:
                raise ConfigError(path, f"must be a number or a non-empty list of numbers, {got(value)}")
            return tuple(scalar(f"{path}[{i}]", v) for i, v in enumerate(value))
        if not is_number(value):
            raise ConfigError(path, f"must be a number or a list of numbers (one per param group), {got(value)}")
        return scalar(path, value)

    return check


def pair(minimum: float, below: float) -> Check:
    """Two numbers (e.g. Adam's betas), each in [minimum, below); returned as a tuple."""

    def check(path: str, value: Any) -> tuple:
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
            is_number(v) and minimum <= v < below for v in value)
        if not ok:
            raise ConfigError(path, f"must be a list of two numbers, each in [{minimum}, {below}), {got(value)}")
        return tuple(value)

    return check


def one_of(*choices: str, lower: bool = False) -> Check:
    """One of the given strings; ``lower``: compared and returned lower-cased."""

    def check(path: str, value: Any) -> str:
        key = value.lower() if lower and isinstance(value, str) else value
        if key not in choices:
            raise ConfigError(path, f"must be one of {', '.join(repr(c) for c in choices)}, {got(value)}")
        return key

    return check


def optional(inner: Check) -> Check:
    """``null`` (None), or a value that passes ``inner``."""

    def check(path: str, value: Any) -> Any:
        return None if value is None else inner(path, value)

    return check


def mapping(path: str, value: Any) -> dict:
    """A JSON object (dict) with string keys."""
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be an object (a dict of keys), {got(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(path, f"has a key that is not a string: {key!r}")
    return value


def join(path: str, key: str) -> str:
    """``optimizer`` + ``params`` -> ``optimizer.params``."""
    return f"{path}.{key}" if path else key
