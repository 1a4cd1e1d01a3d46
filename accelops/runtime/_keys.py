"""Reading one config section against a table of known keys (no torch).

Every key of a section is one of three kinds:

* used: checked and returned to the caller;
* no effect: DeepSpeed tunes its own implementation with it (bucket sizes, ``overlap_comm``, ...), or it
  only feeds a DeepSpeed tool accelops lacks; it is checked, then its path is added to ``no_effect`` so the
  engine can say once that it is ignored;
* unsupported: a DeepSpeed feature accelops does not implement; accepted only while it is off (one of its
  ``inert`` values, or an object with ``"enabled": false``), an error otherwise.

A key in no table is an error that names the closest known key (:mod:`difflib`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from ._checks import Check, anything, join, mapping
from .errors import ConfigError

USED, NO_EFFECT, UNSUPPORTED = "used", "no effect", "unsupported"


@dataclass(frozen=True)
class Key:
    """How one key of a section is read. ``alias_of``: another spelling of that (used) key."""
    kind: str = USED
    check: Check = anything
    required: bool = False
    why: str = ""
    inert: tuple = (None, False)
    alias_of: Optional[str] = None


def used(check: Check, required: bool = False) -> Key:
    return Key(USED, check, required)


def no_effect(check: Check = anything) -> Key:
    return Key(NO_EFFECT, check)


def unsupported(why: str, inert: tuple = (None, False)) -> Key:
    return Key(UNSUPPORTED, why=why, inert=inert)


def alias(of: str, check: Check) -> Key:
    return Key(USED, check, alias_of=of)


def closest(key: str, known: Iterable[str]) -> str:
    """The known key most similar to ``key`` (always one, however far)."""
    known = sorted(known)
    best = difflib.get_close_matches(key, known, n=1, cutoff=0.0)
    return best[0] if best else ""


def unknown_key_error(path: str, key: str, known: Iterable[str]) -> ConfigError:
    near = closest(key, known)
    hint = f"; the closest known key is {near!r}" if near else ""
    return ConfigError(join(path, key), f"is not a known key{hint} (DeepSpeed would silently ignore it)")


def _is_off(value: Any, inert: tuple) -> bool:
    if isinstance(value, dict):
        return not value or value.get("enabled") is False
    return any(value is v or (type(value) is type(v) and value == v) for v in inert)


def read_section(path: str, value: Any, table: Dict[str, Key], no_effect_paths: List[str]) -> Dict[str, Any]:
    """Check the object ``value`` found at ``path`` against ``table``.

    Returns {canonical key: checked value} for the used keys that are present (the caller fills
    defaults); a required key that is missing, an alias given together with its key, an unknown key or an
    unsupported feature turned on raise :class:`ConfigError`. Paths of no-effect keys are appended to
    ``no_effect_paths``.
    """
    section = mapping(path or "the config", value)
    found: Dict[str, Any] = {}
    spelled: Dict[str, str] = {}
    for key, item in section.items():
        spec = table.get(key)
        where = join(path, key)
        if spec is None:
            raise unknown_key_error(path, key, table)
        if spec.kind == UNSUPPORTED:
            if not _is_off(item, spec.inert):
                raise ConfigError(where, f"is a DeepSpeed feature that accelops does not support ({spec.why}); "
                                  f"remove the key or turn it off")
            continue
        checked = spec.check(where, item)
        if spec.kind == NO_EFFECT:
            no_effect_paths.append(where)
            continue
        name = spec.alias_of or key
        if name in spelled:
            raise ConfigError(where, f"and {join(path, spelled[name])} are two spellings of one setting; "
                              f"give only one")
        spelled[name] = key
        found[name] = checked
    for key, spec in table.items():
        if spec.required and key not in found:
            raise ConfigError(join(path, key), "is required here but missing")
    return found
