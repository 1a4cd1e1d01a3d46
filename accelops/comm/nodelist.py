"""SLURM host lists (``node[001-004,007],gpu5``) parsed without calling ``scontrol``."""
import itertools
import re
from typing import Iterator, List

_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_ASCII_DIGITS = re.compile(r"[0-9]+")   # str.isdigit also accepts "²" and other scripts' digits


def _split_top_level(nodelist: str) -> List[str]:
    """Split on commas that are not inside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(nodelist):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested '[' in SLURM node list {nodelist!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in SLURM node list {nodelist!r}")
        elif ch == "," and depth == 0:
            items.append(nodelist[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in SLURM node list {nodelist!r}")
    items.append(nodelist[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_ranges(spec: str, nodelist: str) -> List[str]:
    """``'001-003,7'`` -> ``['001', '002', '003', '7']``; zero padding follows the lower bound."""
    values = []
    for part in spec.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if not _ASCII_DIGITS.fullmatch(lo) or (sep and not _ASCII_DIGITS.fullmatch(hi)):
            raise ValueError(f"bad range {part!r} in SLURM node list {nodelist!r}")
        if not sep:
            values.append(lo)
            continue
        start, stop = int(lo), int(hi)
        if stop < start:
            raise ValueError(f"descending range {part!r} in SLURM node list {nodelist!r}")
        width = len(lo)
        values.extend(str(n).zfill(width) for n in range(start, stop + 1))
    return values


def _expand_item(item: str, nodelist: str) -> Iterator[str]:
    pieces = _BRACKET.split(item)  # text, range, text, range, ..., text
    texts = pieces[0::2]
    if any("[" in text or "]" in text for text in texts):
        raise ValueError(f"bad brackets in SLURM node list {nodelist!r}")
    choices = [_expand_ranges(spec, nodelist) for spec in pieces[1::2]]
    for combo in itertools.product(*choices):
        out = [texts[0]]
        for value, text in zip(combo, texts[1:]):
            out.append(value)
            out.append(text)
        yield "".join(out)


def iter_nodelist(nodelist: str) -> Iterator[str]:
    """Yield the host names of a SLURM node list in order, e.g. ``'a-[1-2]b,c'`` -> a-1b, a-2b, c.

    Handles comma lists, bracket ranges with zero padding (``[001-004]``), several bracket groups
    in one name (cartesian product, left to right). Raises ``ValueError`` on malformed input.
    Lazy, so a huge list costs nothing when only the first host is wanted.
    """
    for item in _split_top_level(nodelist):
        yield from _expand_item(item, nodelist)


def expand_nodelist(nodelist: str) -> List[str]:
    """All host names of a SLURM node list, in order. See :func:`iter_nodelist`."""
    return list(iter_nodelist(nodelist))


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (the master by convention). ``ValueError`` if empty."""
    for host in iter_nodelist(nodelist):
        return host
    raise ValueError(f"empty SLURM node list {nodelist!r}")
