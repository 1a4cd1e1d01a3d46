"""Convert an engine checkpoint to one plain torch state dict: DeepSpeed's ``zero_to_fp32.py`` counterpart.

``python -m accelops.checkpoint verify DIR [--tag TAG]`` checks every file of a checkpoint against the
checksums recorded at save. ``python -m accelops.checkpoint to-torch DIR OUT.pt [--tag TAG]`` reads a checkpoint written by the engine's
``save_checkpoint`` (any world size, any ZeRO stage; layout in :mod:`accelops.runtime.checkpoint`) in this one
process, without a process group or the model's code, and writes with ``torch.save`` the model's state dict:
``{name: tensor}`` with the model's own names (no ``model.`` prefix), every tensor whole (shards joined), on
CPU, in the dtype it was saved in. ``model.load_state_dict(torch.load(OUT.pt))`` restores the weights. The
optimizer state, counters and client state are not part of it.

``DIR`` is a tag folder (it holds DCP's ``.metadata``) or a save dir: then ``--tag`` names the folder, else
the ``latest`` file does. Every file of the checkpoint is checked against the checksums recorded at save
before anything is read. Errors (no such DIR, no checkpoint in it, no such tag folder, a damaged ``latest``,
a missing, truncated or damaged file, no folder for OUT) exit with code 2 and one message line naming the path.

Non-tensor entries of the model's state dict (a module's ``get_extra_state``) are kept, since
``load_state_dict`` needs them (as DCP stores them: tuples come back as lists, empty containers are lost);
reading them unpickles, so convert only checkpoints you trust (as for ``load_checkpoint``). A checkpoint
saved with ``exclude_frozen_parameters=True`` lacks the frozen parameters, and so does the converted dict.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .runtime.checkpoint_layout import (LATEST, METADATA, MODEL_PREFIX, CheckpointError, CheckpointNotFoundError,
                                        read_latest, tag_folder)

__all__ = ["CheckpointError", "CheckpointNotFoundError", "checkpoint_folder", "to_torch_state_dict",
           "convert_to_torch", "verify_checkpoint", "main"]


# ---------------------------------------------------------------------------------------------- locate
def checkpoint_folder(path: Any, tag: Any = None) -> str:
    """The DCP folder to read: ``path`` itself when it holds ``.metadata`` and no ``tag`` is given, else
    ``path/<tag>`` (``tag``, or the one ``path/latest`` names; the complete copy of a tag whose commit was
    killed, as ``load_checkpoint`` reads it). CheckpointNotFoundError (its message names the missing path)
    when ``path`` does not exist, holds no checkpoint, or the chosen folder is missing or holds no
    ``.metadata``; CheckpointError when ``latest`` is damaged."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointNotFoundError(path, "does not exist (expected a checkpoint directory)")
    if tag is None:
        if os.path.isfile(os.path.join(path, METADATA)):
            return path
        tag = read_latest(path)
        if tag is None:
            raise CheckpointNotFoundError(path, f"holds no checkpoint: neither a '{LATEST}' file (a save dir) nor "
                                                f"'{METADATA}' (a tag folder); pass a tag folder or --tag")
    folder = tag_folder(path, str(tag))
    if folder is None:
        raise CheckpointNotFoundError(os.path.join(path, str(tag)), f"does not exist (tag {str(tag)!r})")
    if not os.path.isfile(os.path.join(folder, METADATA)):
        raise CheckpointNotFoundError(folder, f"is not a checkpoint folder: it has no '{METADATA}' (an interrupted "
                                              f"save?)")
    return folder


# ---------------------------------------------------------------------------------------------- read
def _model_template(folder: str) -> Dict[str, Any]:
    """``{model.<name>: value}`` shaped like the state dict that was saved, from the folder's DCP metadata:
    an empty CPU tensor of the saved global shape and dtype per tensor, None per pickled object (DCP replaces
    it), and the dicts and lists that DCP flattened at save (a module's extra state) rebuilt around them
    (DCP's ``planner_data`` holds each flat key's path). ValueError when the checkpoint has no model entry."""
    import torch
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from .runtime.checkpoint import read_metadata

    metadata = read_metadata(folder)
    paths = metadata.planner_data or {}
    template: Dict[str, Any] = {}
    for key, saved in metadata.state_dict_metadata.items():
        path = tuple(paths.get(key, (key,)))
        if not str(path[0]).startswith(MODEL_PREFIX):
            continue
        leaf = None
        if isinstance(saved, TensorStorageMetadata):
            leaf = torch.empty(saved.size, dtype=saved.properties.dtype, device="cpu")
        _put(template, path, leaf)
    if not template:
        raise ValueError(f"{folder} holds no '{MODEL_PREFIX}*' entries: not a checkpoint of the accelops engine")
    return {key: _with_lists(value) for key, value in template.items()}


def _put(root: Dict[Any, Any], path: Tuple[Any, ...], leaf: Any) -> None:
    """Set ``root[path[0]][path[1]]...`` to ``leaf``, making dicts on the way (int keys: list indices)."""
    node = root
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = leaf


def _with_lists(value: Any) -> Any:
    """``value`` with every dict made by :func:`_put` whose keys are ints (DCP's list indices) as a list (None
    where an index is missing: an element DCP saved nothing for, such as an empty dict)."""
    if not isinstance(value, dict):
        return value
    items = {key: _with_lists(item) for key, item in value.items()}
    if items and all(isinstance(key, int) for key in items):
        return [items.get(i) for i in range(max(items) + 1)]
    return items


def _load_single_process(template: Dict[str, Any], folder: str) -> None:
    """Fill ``template`` in place from the DCP folder, in this process only (no process group is used, even
    when one is initialised)."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            dcp.load(template, checkpoint_id=folder, no_dist=True)
        except Exception as error:  # noqa: BLE001 - a file DCP cannot read (only unchecked, older checkpoints)
            raise CheckpointError(folder, f"cannot be read: {str(error).splitlines()[0] if str(error) else error!r}") \
                from None


def _read_model(folder: str) -> Dict[str, Any]:
    """The model's entries of a DCP folder, without the ``model.`` prefix, after checking every file of the
    folder against its recorded checksum (CheckpointError naming a damaged file)."""
    from .runtime.checkpoint import verify_folder

    verify_folder(folder)
    template = _model_template(folder)
    _load_single_process(template, folder)
    return {key[len(MODEL_PREFIX):]: value for key, value in template.items()}


def to_torch_state_dict(path: Any, tag: Any = None) -> Dict[str, Any]:
    """The model's full state dict from the checkpoint at ``path`` (a tag folder or a save dir, see
    :func:`checkpoint_folder`): names without the ``model.`` prefix, whole CPU tensors in their saved dtype,
    in the order of the checkpoint's metadata (the model's ``state_dict`` order, as saved). Reads only the
    model's entries, never the optimizer's. CheckpointNotFoundError or ValueError when there is no engine
    checkpoint there."""
    return _read_model(checkpoint_folder(path, tag))


def convert_to_torch(path: Any, out: Any, tag: Any = None) -> Dict[str, Any]:
    """Write :func:`to_torch_state_dict` of ``path``/``tag`` to the file ``out`` with ``torch.save`` (replacing
    it) and return it. FileNotFoundError when ``out``'s directory does not exist, the errors of
    :func:`to_torch_state_dict` otherwise; on any of them nothing is written. The paths are checked first,
    before torch is imported, so a mistyped path fails at once."""
    out = os.fspath(out)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"the directory of the output file {out} does not exist ({parent})")
    state = _read_model(checkpoint_folder(path, tag))
    import torch

    torch.save(state, out)
    return state


# ---------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m accelops.checkpoint",
                                     description="Tools for checkpoints saved by the accelops engine.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    to_torch = commands.add_parser("to-torch", help="write the model's full state dict as one torch.save file "
                                                    "(DeepSpeed's zero_to_fp32.py)",
                                   description="Write the model's full state dict (any world size, any ZeRO stage) "
                                               "as one torch.save file: {name: tensor}, for model.load_state_dict.")
    to_torch.add_argument("dir", metavar="DIR", help="a save dir (the tag from --tag, else from its 'latest' file) "
                                                     "or a tag folder")
    to_torch.add_argument("out", metavar="OUT", help="the file to write, e.g. pytorch_model.pt")
    to_torch.add_argument("--tag", default=None, help="the checkpoint tag inside DIR (default: DIR/latest)")
    verify = commands.add_parser("verify", help="check every file of a checkpoint against its recorded checksums",
                                 description="Check every file of a checkpoint against the checksums recorded at "
                                             "save, without loading it; exit 0 when intact, 2 naming the first "
                                             "damaged file.")
    verify.add_argument("dir", metavar="DIR", help="a save dir (the tag from --tag, else from its 'latest' file) "
                                                   "or a tag folder")
    verify.add_argument("--tag", default=None, help="the checkpoint tag inside DIR (default: DIR/latest)")
    return parser


def verify_checkpoint(path: Any, tag: Any = None) -> str:
    """Check every file of the checkpoint at ``path``/``tag`` (see :func:`checkpoint_folder`) against its
    recorded checksums; returns the folder checked. CheckpointError naming the first bad file."""
    from .runtime.checkpoint import verify_folder

    folder = checkpoint_folder(path, tag)
    verify_folder(folder)
    return folder


def _summary(state: Dict[str, Any], out: str) -> str:
    tensors: List[Any] = [value for value in state.values() if hasattr(value, "numel")]
    count = sum(value.numel() for value in tensors)
    return f"wrote {len(tensors)} tensors ({count:,} parameters) to {out}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI; returns the exit code: 0 done, 2 bad arguments or no checkpoint (one message on stderr)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            print(f"intact: every file of {verify_checkpoint(args.dir, tag=args.tag)} matches its checksum")
            return 0
        state = convert_to_torch(args.dir, args.out, tag=args.tag)
    except (OSError, ValueError, CheckpointError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(_summary(state, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
