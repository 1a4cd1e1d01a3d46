"""A read-only dict, for the parameter mappings inside the frozen config dataclasses."""
from __future__ import annotations

from typing import Any, NoReturn


class FrozenDict(dict):
    """A dict that refuses changes after construction; it pickles, copies and compares as a dict, and
    ``**frozen`` passes its items as keyword arguments. ``dict(frozen)`` gives a mutable copy."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("this mapping is part of a frozen config; copy it with dict(...) to change it")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> "FrozenDict":
        return self

    def __deepcopy__(self, memo: dict) -> "FrozenDict":
        import copy
        return FrozenDict(copy.deepcopy(dict(self), memo))

    def __hash__(self) -> int:  # frozen dataclasses holding it stay hashable
        return hash(tuple(sorted((k, repr(v)) for k, v in self.items())))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"
