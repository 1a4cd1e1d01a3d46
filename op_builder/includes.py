"""The files a build reads: an op's sources and the headers they include, followed transitively.

A simple scan, no preprocessor: every ``#include "name"`` line (also inside ``#if`` branches, so a key may
follow a header a build skips, never the reverse) is looked up as the compiler does, next to the including
file first, then in the op's include folders in order. ``#include <name>`` is looked up in the include folders
only: system, compiler and torch headers are not part of the op and not part of its key.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*([<"])([^">\n]+)[">]', re.MULTILINE)


def included_files(sources: Iterable[Path], include_dirs: Sequence[Path]) -> List[Path]:
    """``sources`` plus every file they include, directly or through other headers, that is found next to its
    includer or in ``include_dirs``; sorted, each once. Unreadable files are kept and not scanned."""
    seen, todo = set(), [Path(os.path.normpath(s)) for s in sources]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for quote, name in _INCLUDE.findall(text):
            folders = ([path.parent] if quote == '"' else []) + list(include_dirs)
            found = _find(name.strip(), folders)
            if found is not None:
                todo.append(found)
    return sorted(seen)


def _find(name: str, folders: Sequence[Path]) -> Optional[Path]:
    for folder in folders:
        candidate = Path(os.path.normpath(folder / name))
        if candidate.is_file():
            return candidate
    return None
