"""The files of an engine checkpoint on disk: names, the ``latest`` file, the commit protocol and its recovery.

Torch-free (the ``to-torch`` CLI checks paths before importing torch); the only module that spells the layout:

``<save_dir>/latest``                 the last committed tag (UTF-8 text, a plain folder name)
``<save_dir>/<tag>/``                 a committed checkpoint: DCP's ``.metadata`` and ``*.distcp`` files holding
                                      ``model.<name>`` and ``optim.<param>::<key>``, ``engine_state.pt`` and
                                      ``checksums.json`` (see :mod:`.checkpoint_checksums`), written last
``<save_dir>/.<tag>.partial/``        a save in progress; complete once it holds ``checksums.json``
``<save_dir>/.<tag>.old/``            the previous copy of a re-saved tag, during its commit only

Commit (rank 0, after every rank has written and the checksums are in place): the old ``<tag>`` (if any) is
renamed to ``.<tag>.old``, ``.<tag>.partial`` to ``<tag>``, ``.<tag>.old`` removed, then ``latest`` replaced
atomically. A process killed between any two of these calls leaves a state :func:`tag_folder` reads
correctly (the complete new copy, else the previous one) and :func:`recover` puts right at the next save.
"""
from __future__ import annotations

import os
import shutil
from typing import List, Optional

MODEL_PREFIX = "model."  # the model's entries in DCP: model.<name>
OPTIM_PREFIX = "optim."  # the optimizer's state tensors: optim.<param name>::<key>
METADATA = ".metadata"  # DCP's index file, one per checkpoint folder
ENGINE_STATE = "engine_state.pt"
CHECKSUMS = "checksums.json"
LATEST = "latest"
_PARTIAL, _OLD = ".partial", ".old"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, damaged, or not the engine's. ``path`` is the file or folder
    at fault, ``problem`` what is wrong with it; the message is ``"<path>: <problem>"``."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint (folder, tag, or the tag ``latest`` names) does not exist."""


def check_tag(tag: object) -> str:
    """``tag`` as a string; ValueError unless it is a plain folder name (not empty, no path separator, not
    starting with '.', not 'latest')."""
    text = str(tag)
    if not text or text.startswith(".") or "/" in text or os.sep in text or text == LATEST or "\0" in text:
        raise ValueError(f"checkpoint tag {text!r} must be a plain folder name (not empty, no path separator, not "
                         f"starting with '.', not 'latest')")
    return text


def partial_folder(save_dir: str, tag: str) -> str:
    return os.path.join(save_dir, f".{tag}{_PARTIAL}")


def _old_folder(save_dir: str, tag: str) -> str:
    return os.path.join(save_dir, f".{tag}{_OLD}")


def is_complete(folder: str) -> bool:
    """Whether a (partial) folder holds every file of a checkpoint: its checksum file is written last."""
    return os.path.isfile(os.path.join(folder, CHECKSUMS))


# ---------------------------------------------------------------------------------------------- reading
def read_latest(save_dir: str) -> Optional[str]:
    """The tag ``save_dir/latest`` names, or None when there is no such file. CheckpointError naming the file
    when it is not UTF-8, empty, or not a plain tag."""
    path = os.path.join(save_dir, LATEST)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(4097)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CheckpointError(path, f"cannot be read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CheckpointError(path, f"is not UTF-8 text (it should hold a checkpoint tag); starts {raw[:16]!r}") \
            from None
    if not text:
        raise CheckpointError(path, "is empty: it names no checkpoint tag")
    try:
        return check_tag(text)
    except ValueError:
        raise CheckpointError(path, f"does not hold a checkpoint tag but {text[:60]!r}") from None


def saved_tags(save_dir: str) -> List[str]:
    """The committed tags in ``save_dir``: folders not starting with '.' that hold a checksum file or an
    engine state (other folders, a ``logs/`` say, are not checkpoints), sorted."""
    try:
        names = os.listdir(save_dir)
    except OSError:
        return []
    return sorted(n for n in names if not n.startswith(".") and any(
        os.path.isfile(os.path.join(save_dir, n, marker)) for marker in (CHECKSUMS, ENGINE_STATE)))


def tag_folder(save_dir: str, tag: str) -> Optional[str]:
    """The folder holding ``tag``'s checkpoint: ``save_dir/tag``; when a commit was killed between its renames,
    the complete new copy (``.tag.partial``) or else the previous one (``.tag.old``), which :func:`recover`
    would put in place. None when there is none of them. Reads only; moves nothing."""
    final = os.path.join(save_dir, tag)
    if os.path.isdir(final):
        return final
    partial, old = partial_folder(save_dir, tag), _old_folder(save_dir, tag)
    if os.path.isdir(partial) and is_complete(partial):
        return partial
    if os.path.isdir(old):
        return old
    return None


# ---------------------------------------------------------------------------------------------- writing
def fsync_folder(folder: str) -> None:
    """Make the folder's entries (renames, new files) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_folder(folder: str) -> None:
    """Remove a leftover folder; its checksum file first, so a removal cut short never looks complete."""
    try:
        os.remove(os.path.join(folder, CHECKSUMS))
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def recover(save_dir: str) -> List[str]:
    """Finish or undo what killed saves left in ``save_dir``, for every tag: a tag whose commit stopped between
    its renames gets its complete new copy, else its previous one, back as ``<tag>``; every other
    ``.<tag>.partial`` and ``.<tag>.old`` and a stray ``latest.tmp`` are removed. Rank 0 only, before a
    save. Returns what it did, one line per folder (for the log)."""
    done: List[str] = []
    try:
        names = sorted(os.listdir(save_dir))
    except FileNotFoundError:
        return done
    tags = {n[1:-len(_PARTIAL)] for n in names if n.startswith(".") and n.endswith(_PARTIAL)}
    tags |= {n[1:-len(_OLD)] for n in names if n.startswith(".") and n.endswith(_OLD)}
    for tag in sorted(t for t in tags if t):
        final, partial, old = os.path.join(save_dir, tag), partial_folder(save_dir, tag), _old_folder(save_dir, tag)
        if not os.path.isdir(final):
            source = partial if os.path.isdir(partial) and is_complete(partial) else old
            if os.path.isdir(source):
                os.rename(source, final)
                done.append(f"{final}: restored from {os.path.basename(source)} (a commit was interrupted)")
        for leftover in (partial, old):
            if os.path.isdir(leftover):
                _remove_folder(leftover)
                done.append(f"{leftover}: removed (left by an interrupted save)")
    stray = os.path.join(save_dir, LATEST + ".tmp")
    if os.path.exists(stray):
        os.remove(stray)
    return done


def commit(save_dir: str, tag: str, save_latest: bool) -> None:
    """Rank 0, once ``.<tag>.partial`` is complete: put it in place as ``<tag>`` (replacing an older copy) and
    then, with ``save_latest``, point ``latest`` at it. See the module docstring for why every stop is safe."""
    final, partial, old = os.path.join(save_dir, tag), partial_folder(save_dir, tag), _old_folder(save_dir, tag)
    if os.path.isdir(final):
        os.rename(final, old)
    os.rename(partial, final)
    fsync_folder(save_dir)
    if os.path.isdir(old):
        _remove_folder(old)
    if save_latest:
        latest_tmp = os.path.join(save_dir, LATEST + ".tmp")
        with open(latest_tmp, "w", encoding="utf-8") as handle:
            handle.write(tag)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(latest_tmp, os.path.join(save_dir, LATEST))
        fsync_folder(save_dir)
