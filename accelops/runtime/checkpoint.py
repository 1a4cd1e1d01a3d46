"""``save_checkpoint`` / ``load_checkpoint`` of the engine, with ``torch.distributed.checkpoint`` (DCP).

Layout of ``<save_dir>/<tag>/``: DCP's files (``.metadata`` and one ``.distcp`` file per rank) holding
the model's tensors under ``model.<name>`` and the optimizer's state tensors under
``optim.<param name>::<key>``, all as global tensors (a sharded tensor by its shards), so a checkpoint
saved at any world size and ZeRO stage loads at any other; and ``engine_state.pt`` (``torch.save``, written
by rank 0): counters, the loss scaler, the LR scheduler, the optimizer's param-group settings and
non-tensor state, the config, and the client state. ``<save_dir>/latest`` holds the last tag.

DeepSpeed facts (deepspeed/runtime/engine.py ``save_checkpoint``/``load_checkpoint``): the tag defaults to
``global_step<global_steps>``; ``latest`` names the last saved tag and is read when no tag is given;
without it (or without the tag's folder) loading logs a warning and returns ``(None, None)``; loading
restores ``global_steps``, ``global_samples`` and ``skipped_steps`` (not ``micro_steps``), and with
``load_module_only`` only the weights; it returns the client state saved with the checkpoint.

Nothing is lost (the files and the commit protocol: :mod:`.checkpoint_layout`): every rank writes into
``<save_dir>/.<tag>.partial``; then every rank records the checksums (XXH3-64) of the files it wrote and rank 0 writes
them to ``checksums.json`` (:mod:`.checkpoint_checksums`), renames the folder to ``<tag>`` and replaces
``latest``. A save killed at any point leaves the previous or the new checkpoint loadable through ``latest``;
the next save finishes or undoes an interrupted commit and removes every leftover. Loading checks every file
against its checksum first (the ranks share the reading) and raises :class:`CheckpointError` naming the file
on every rank when one is missing, truncated or damaged, and when ``latest`` names no usable checkpoint:
``(None, None)`` is kept for a folder holding no checkpoint at all. A shared filesystem is assumed.

Before writing, the ranks meet at a barrier with a timeout (``ACCELOPS_CHECKPOINT_TIMEOUT`` seconds,
default 300): a rank that never calls save makes the others fail with a message saying so, instead of
waiting for the process group's timeout. ``engine_state.pt`` is read with ``torch.load(weights_only=False)``
(the client state may hold any object): load only checkpoints you trust, as with DeepSpeed.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from .._logging import get_logger
from . import checkpoint_checksums as checksums
from .checkpoint_layout import (ENGINE_STATE, LATEST, METADATA, MODEL_PREFIX, OPTIM_PREFIX, CheckpointError,
                                CheckpointNotFoundError, check_tag, commit, partial_folder, read_latest, recover,
                                saved_tags, tag_folder)
from .optimizers import optimizer_params
from . import moe_support
from .parallel import model_param_names

logger = get_logger(__name__)
FORMAT = "accelops-engine-checkpoint/2"
_UNCHECKED_FORMAT = "accelops-engine-checkpoint/1"  # saved before checksums: loads unchecked, with a warning
TIMEOUT_ENV = "ACCELOPS_CHECKPOINT_TIMEOUT"
_RULE_KEYS = ("params", "decoupled_weight_decay")  # never taken from a checkpoint: the update rule stays


# ---------------------------------------------------------------------------------------------- collectives
def _timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else 300.0
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return timedelta(seconds=seconds)


def barrier(engine: Any, what: str) -> None:
    """Wait for every rank, at most the checkpoint timeout; RuntimeError naming ``what`` otherwise."""
    if engine.world_size == 1:
        return
    timeout = _timeout()
    try:
        dist.monitored_barrier(group=engine._checkpoint_group(), timeout=timeout, wait_all_ranks=True)
    except RuntimeError as error:
        raise RuntimeError(f"{what}: not every rank reached it within {timeout.total_seconds():g} s (every rank "
                           f"must call it, with the same arguments; {TIMEOUT_ENV} sets the wait): {error}") from error


def _agreed(engine: Any, task: Any) -> Any:
    """``task()`` on every rank; when it raises CheckpointError on any rank, every rank raises that error (the
    first rank's), so no rank goes on to a collective the others never reach."""
    try:
        result, mine = task(), None
    except CheckpointError as error:
        result, mine = None, (error.path, error.problem, isinstance(error, CheckpointNotFoundError))
    if engine.world_size > 1:
        errors: List[Any] = [None] * engine.world_size
        dist.all_gather_object(errors, mine, group=engine._checkpoint_group())
        mine = next((e for e in errors if e is not None), None)
    if mine is not None:
        path, problem, missing = mine
        raise (CheckpointNotFoundError if missing else CheckpointError)(path, problem)
    return result


def _same_on_every_rank(engine: Any, what: str, value: Any) -> None:
    if engine.world_size == 1:
        return
    values: List[Any] = [None] * engine.world_size
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise ValueError(f"{what} differs between ranks: {values}; every rank must pass the same value")


# ---------------------------------------------------------------------------------------------- state
def _global(value: Any, sharded: Any) -> Any:
    """A state tensor of a local shard as a DTensor shaped like ``sharded``; other values as they are."""
    if sharded is None or not hasattr(sharded, "device_mesh") or not torch.is_tensor(value) or value.dim() == 0:
        return value  # not sharded (an expert FSDP2 ignores is a plain tensor on every rank)
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(value, sharded.device_mesh, sharded.placements, run_check=False,
                              shape=sharded.shape, stride=sharded.stride())


def _optimizer_names(engine: Any) -> List[Tuple[str, Any]]:
    """(checkpoint name of the param, sharded DTensor when the optimizer holds its local shard, else None) per
    optimizer param."""
    parallel = engine._parallel
    renames = moe_support.global_names(engine.module)
    if parallel.bound:
        return [(moe_support.rename(name, renames), sharded if parallel.local_pairs else None)
                for name, sharded in parallel.bound]
    names = model_param_names(engine.module)
    found = []
    for i, param in enumerate(optimizer_params(engine.optimizer)):
        if id(param) not in names:
            raise ValueError(f"optimizer param {i} (shape {tuple(param.shape)}) is not a parameter of the model, so "
                             f"it has no name to checkpoint it under")
        found.append((moe_support.rename(names[id(param)], renames), None))
    return found


def _model_state(engine: Any, exclude_frozen: bool = False) -> Dict[str, Any]:
    """The model's state under its checkpoint names (experts under their global numbers,
    :mod:`accelops.runtime.moe_support`)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(engine.module)
    if exclude_frozen:
        frozen = {name for name, param in engine.module.named_parameters() if not param.requires_grad}
        state = {k: v for k, v in state.items() if k not in frozen}
    renames = moe_support.global_names(engine.module)
    return {moe_support.rename(k, renames): v for k, v in state.items()}


def _optimizer_state(engine: Any) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(DCP tensors ``optim.<name>::<key>``, pickled part: group settings and non-tensor state)."""
    optimizer = engine.optimizer
    tensors: Dict[str, torch.Tensor] = {}
    scalars: Dict[str, Dict[str, Any]] = {}
    for param, (name, sharded) in zip(optimizer_params(optimizer), _optimizer_names(engine)):
        for key, value in optimizer.state.get(param, {}).items():
            if torch.is_tensor(value):
                tensors[f"{OPTIM_PREFIX}{name}::{key}"] = _global(value, sharded)
            else:
                scalars.setdefault(name, {})[key] = value
    groups = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    names = iter(_optimizer_names(engine))
    for group, saved in zip(optimizer.param_groups, groups):
        saved["param_names"] = [next(names)[0] for _ in group["params"]]
    return tensors, {"type": type(optimizer).__name__, "param_groups": groups, "scalars": scalars}


def _materialize_optimizer_state(optimizer: torch.optim.Optimizer) -> List[Any]:
    """Create the state of every param that has none with one step at lr 0 on zero gradients (torch's
    ``get_optimizer_state_dict`` does the same), only for those params: params that have state get no
    gradient during it, so nothing they hold moves. Parameters, lrs (tensor lrs too) and existing gradients
    are as before afterwards; the state is then loaded. Returns the params whose state it created."""
    params = optimizer_params(optimizer)
    stateless = [p for p in params if not optimizer.state.get(p)]
    if not stateless:
        return stateless
    saved_grads = {id(p): p.grad for p in params}
    for param in params:
        param.grad = None
    for param in stateless:
        param.grad = torch.zeros_like(param)
    saved_lrs = [lr.clone() if torch.is_tensor(lr) else lr for lr in (g["lr"] for g in optimizer.param_groups)]
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(0.0)
        else:
            group["lr"] = 0.0
    try:
        optimizer.step()
    finally:
        for group, lr in zip(optimizer.param_groups, saved_lrs):
            if torch.is_tensor(lr):
                group["lr"].copy_(lr)
            else:
                group["lr"] = lr
        for param in params:
            param.grad = saved_grads[id(param)]
    return stateless


# ---------------------------------------------------------------------------------------------- save
def _client_state(client_state: Any, client_sd: Any) -> dict:
    if client_sd is not None and client_state and client_state is not client_sd:
        raise ValueError("save_checkpoint got both client_state and client_sd (the guide's name for it); pass one")
    state = client_sd if client_sd is not None else (client_state or {})
    if not isinstance(state, dict):
        raise TypeError(f"client_state must be a dict, got a {type(state).__name__}")
    return state


def save_checkpoint(engine: Any, save_dir: Any, tag: Any = None, client_state: Any = None, save_latest: bool = True,
                    exclude_frozen_parameters: bool = False, client_sd: Any = None) -> bool:
    """Save the engine's training state under ``save_dir/tag`` (module docstring). A collective: every rank
    calls it with the same tag. Returns True."""
    client = _client_state(client_state, client_sd)
    tag = check_tag(f"global_step{engine.global_steps}" if tag is None else tag)
    save_dir = os.fspath(save_dir)
    barrier(engine, f"save_checkpoint(tag={tag!r})")
    _same_on_every_rank(engine, "the checkpoint tag", tag)
    partial = partial_folder(save_dir, tag)
    if engine.global_rank == 0:
        os.makedirs(save_dir, exist_ok=True)
        for line in recover(save_dir):
            logger.warning("save_checkpoint: %s", line)
        os.makedirs(partial)
    barrier(engine, "save_checkpoint (folder creation)")
    import torch.distributed.checkpoint as dcp

    tensors = {f"{MODEL_PREFIX}{k}": v for k, v in _model_state(engine, exclude_frozen_parameters).items()}
    optimizer_meta = None
    if engine.optimizer is not None:
        optimizer_tensors, optimizer_meta = _optimizer_state(engine)
        tensors.update(optimizer_tensors)
        # a pipeline stage knows only its own parameters' non-tensor state: rank 0 writes every stage's
        optimizer_meta["scalars"] = {name: value for part in engine._gather_over_stages(optimizer_meta["scalars"])
                                     for name, value in part.items()}
    # Replicated entries (buffers, DDP's parameters) are written by rank 0, as DeepSpeed saves rank 0's module
    # state: DCP would otherwise spread them over the ranks, mixing ranks whose buffers differ (BatchNorm).
    dcp.save(tensors, checkpoint_id=partial, planner=dcp.DefaultSavePlanner(dedup_save_to_lowest_rank=True))
    if engine.global_rank == 0:
        with open(os.path.join(partial, ENGINE_STATE), "wb") as handle:
            torch.save(_engine_state(engine, optimizer_meta, client), handle)
            handle.flush()
            os.fsync(handle.fileno())
    barrier(engine, "save_checkpoint (writing)")
    entries = checksums.compute(partial, checksums.owned_files(partial, engine.global_rank, engine.world_size))
    if engine.world_size > 1:
        gathered: List[Any] = [None] * engine.world_size
        dist.all_gather_object(gathered, entries, group=engine._checkpoint_group())
        entries = {name: entry for part in gathered for name, entry in part.items()}
    if engine.global_rank == 0:
        checksums.write(partial, entries)
        commit(save_dir, tag, save_latest)
    barrier(engine, "save_checkpoint (commit)")
    return True


def _engine_state(engine: Any, optimizer_meta: Optional[dict], client: dict) -> dict:
    scheduler = engine.lr_scheduler
    return {"format": FORMAT, "global_steps": engine.global_steps, "global_samples": engine.global_samples,
            "skipped_steps": engine.skipped_steps, "dp_world_size": engine.dp_world_size,
            "zero_stage": engine.zero_optimization_stage(), "ds_config": engine._config.source_json,
            "loss_scaler": {"type": type(engine.loss_scaler).__name__, "state": engine.loss_scaler.state_dict()},
            "lr_scheduler": None if scheduler is None else scheduler.state_dict(), "optimizer": optimizer_meta,
            "client_state": client}


# ---------------------------------------------------------------------------------------------- load
def _locate(load_dir: str, tag: Any) -> Optional[str]:
    """The checkpoint folder to load: ``tag``'s, else the one ``latest`` names. None (with DeepSpeed's warning)
    only when ``load_dir`` holds no checkpoint at all; CheckpointError naming what is missing otherwise."""
    tags, asked = saved_tags(load_dir), tag is not None
    if not asked:
        tag = read_latest(load_dir)
        if tag is None:
            latest = os.path.join(load_dir, LATEST)
            if tags:
                raise CheckpointNotFoundError(latest, f"does not exist, but the folder holds the checkpoints {tags}: "
                                                      f"pass tag= to choose one")
            logger.warning("Unable to find latest file at %s, if trying to load latest checkpoint please ensure this "
                           "file exists or pass an explicit checkpoint tag when loading a checkpoint.", latest)
            return None
    else:
        tag = check_tag(tag)
    folder = tag_folder(load_dir, tag)
    if folder is None:
        if not tags and asked:
            logger.warning("Client provided checkpoint load path: %s does not exist ... skip checkpoint load",
                           os.path.join(load_dir, tag))
            return None
        named = "the tag asked for" if asked else f"the tag that {os.path.join(load_dir, LATEST)} names"
        raise CheckpointNotFoundError(os.path.join(load_dir, tag), f"does not exist ({named}); the folder holds "
                                                                   f"{tags or 'no committed checkpoint'}")
    if os.path.basename(folder) != tag:
        logger.warning("load_checkpoint: the save of %r was killed during its commit; loading its complete copy %s "
                       "(the next save puts it in place)", tag, folder)
    return folder


def verify_folder(folder: str, rank: int = 0, world_size: int = 1) -> None:
    """Check this rank's share of the files of the checkpoint ``folder`` (all of them in a world of one) against
    ``checksums.json``; CheckpointError naming the first bad file (missing, truncated, damaged). A checkpoint
    saved before checksums existed is not checked: a warning says so."""
    try:
        files = checksums.read(folder)
    except FileNotFoundError:
        state_path = os.path.join(folder, ENGINE_STATE)
        if not os.path.isfile(state_path):
            raise CheckpointNotFoundError(folder, f"is not a complete checkpoint: it has neither "
                                                  f"{checksums.CHECKSUMS} nor {ENGINE_STATE}") from None
        if _read_engine_state(folder).get("format") != _UNCHECKED_FORMAT:
            raise CheckpointError(os.path.join(folder, checksums.CHECKSUMS), "is missing (every checkpoint of "
                                  "this format has one): the folder is damaged") from None
        logger.warning("%s was saved before accelops recorded checksums: its files are not checked", folder)
        return
    for required in (ENGINE_STATE, METADATA):
        if required not in files:
            raise CheckpointError(os.path.join(folder, checksums.CHECKSUMS), f"does not list {required}: damaged")
    problems = checksums.verify(folder, files, sorted(files)[rank::world_size])
    if problems:
        path, problem = problems[0]
        more = f" (and {len(problems) - 1} more damaged files)" if len(problems) > 1 else ""
        raise CheckpointError(path, problem + more)


def read_metadata(folder: str) -> Any:
    """DCP's metadata of the checkpoint ``folder``; CheckpointError naming ``.metadata`` when it is unreadable."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        return FileSystemReader(folder).read_metadata()
    except FileNotFoundError:
        raise CheckpointNotFoundError(os.path.join(folder, METADATA), "is missing") from None
    except Exception as error:  # noqa: BLE001 - whatever unpickling garbage raises
        raise CheckpointError(os.path.join(folder, METADATA), f"cannot be read: {error}") from None


def _read_engine_state(folder: str) -> dict:
    path = os.path.join(folder, ENGINE_STATE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointNotFoundError(path, "is missing") from None
    except Exception as error:  # noqa: BLE001 - an unreadable pickle, whatever torch raises for it
        raise CheckpointError(path, f"cannot be read: {error}") from None
    if not isinstance(state, dict) or state.get("format") not in (FORMAT, _UNCHECKED_FORMAT):
        raise CheckpointError(path, f"is not an accelops engine state (no format {FORMAT!r})")
    return state


def _open_checked(folder: str, rank: int, world_size: int) -> Tuple[dict, Any]:
    """(engine state, DCP metadata) of ``folder`` once this rank's share of its files passed the checksums."""
    verify_folder(folder, rank, world_size)
    return _read_engine_state(folder), read_metadata(folder)


def _check_model_keys(expected: Dict[str, Any], saved: set, strict: bool, whole: set) -> Dict[str, Any]:
    """The entries of ``expected`` (this rank's model state) to load. With ``strict``, RuntimeError when the
    checkpoint lacks one of them or has a model key that is not in ``whole`` (the names of the whole model:
    a pipeline stage holds only its own)."""
    missing = sorted(k for k in expected if f"{MODEL_PREFIX}{k}" not in saved)
    if strict:
        names = {k[len(MODEL_PREFIX):] for k in saved if k.startswith(MODEL_PREFIX)}
        unexpected = sorted(names - whole)
        if missing or unexpected:
            raise RuntimeError(f"load_checkpoint: the checkpoint does not match the model (load_module_strict=True): "
                               f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}, unexpected keys "
                               f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    return {k: v for k, v in expected.items() if k not in missing}


def _optimizer_template(engine: Any, saved: set) -> Tuple[Dict[str, torch.Tensor], List[Any]]:
    """The optimizer tensors to load (views of the live state) and the params without saved state.
    RuntimeError (the optimizer left as it was) when the saved state is another optimizer's."""
    optimizer = engine.optimizer
    stateless = _materialize_optimizer_state(optimizer)
    try:
        return _match_saved_state(engine, saved)
    except RuntimeError:
        for param in stateless:
            optimizer.state.pop(param, None)
        raise


def _match_saved_state(engine: Any, saved: set) -> Tuple[Dict[str, torch.Tensor], List[Any]]:
    tensors, _ = _optimizer_state(engine)
    wanted: Dict[str, List[str]] = {}
    for key in tensors:
        wanted.setdefault(key.split("::")[0], []).append(key)
    have: Dict[str, List[str]] = {}
    for key in saved:
        if key.startswith(OPTIM_PREFIX):
            have.setdefault(key.split("::")[0], []).append(key)
    template, empty = {}, []
    for param, (name, _) in zip(optimizer_params(engine.optimizer), _optimizer_names(engine)):
        keys, found = sorted(wanted.get(f"{OPTIM_PREFIX}{name}", [])), sorted(have.get(f"{OPTIM_PREFIX}{name}", []))
        if not found:
            empty.append(param)
        elif keys != found:
            kind = type(engine.optimizer).__name__
            raise RuntimeError(f"load_checkpoint: the saved optimizer state of {name!r} has "
                               f"{[k.split('::')[1] for k in found]}, this optimizer ({kind}) needs "
                               f"{[k.split('::')[1] for k in keys]}: a checkpoint of another optimizer? "
                               f"Pass load_optimizer_states=False to skip it")
        else:
            template.update({k: tensors[k] for k in keys})
    return template, empty


def _restore_optimizer(engine: Any, meta: dict, empty: List[Any]) -> None:
    optimizer = engine.optimizer
    if len(meta["param_groups"]) != len(optimizer.param_groups):
        raise RuntimeError(f"load_checkpoint: the checkpoint's optimizer has {len(meta['param_groups'])} param "
                           f"groups, this one {len(optimizer.param_groups)}")
    for group, saved in zip(optimizer.param_groups, meta["param_groups"]):
        for key, value in saved.items():
            if key in group and key not in _RULE_KEYS:
                group[key] = value
    for param, (name, _) in zip(optimizer_params(optimizer), _optimizer_names(engine)):
        optimizer.state[param].update(meta["scalars"].get(name, {}))
    for param in empty:
        optimizer.state.pop(param, None)


def load_checkpoint(engine: Any, load_dir: Any, tag: Any = None, load_module_strict: bool = True,
                    load_optimizer_states: bool = True, load_lr_scheduler_states: bool = True,
                    load_module_only: bool = False, custom_load_fn: Any = None) -> Tuple[Optional[str], Any]:
    """Load a checkpoint saved by :func:`save_checkpoint` at any world size and stage; returns
    ``(path, client_state)`` or ``(None, None)`` when there is nothing to load. A collective."""
    if custom_load_fn is not None:
        raise ValueError("load_checkpoint(custom_load_fn=...) is not supported by accelops")
    barrier(engine, f"load_checkpoint({os.fspath(load_dir)!r})")
    path = _agreed(engine, lambda: _locate(os.fspath(load_dir), tag))
    if path is None:
        return None, None
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state, metadata = _agreed(engine, lambda: _open_checked(path, engine.global_rank, engine.world_size))
    saved = set(metadata.state_dict_metadata)
    expected = _model_state(engine)
    whole = set().union(*engine._gather_over_stages(set(expected)))
    model = _check_model_keys(expected, saved, load_module_strict, whole)
    template = {f"{MODEL_PREFIX}{k}": v for k, v in model.items()}
    with_optimizer = (load_optimizer_states and not load_module_only and engine.optimizer is not None
                      and state["optimizer"] is not None)
    empty: List[Any] = []
    if with_optimizer:
        optimizer_tensors, empty = _optimizer_template(engine, saved)
        template.update(optimizer_tensors)
    dcp.load(template, checkpoint_id=path)
    to_local = {g: local for local, g in moe_support.global_names(engine.module).items()}  # experts' own names
    loaded = {moe_support.rename(k, to_local): template[f"{MODEL_PREFIX}{k}"] for k in model}
    set_model_state_dict(engine.module, loaded, options=StateDictOptions(strict=False))
    if with_optimizer:
        _restore_optimizer(engine, state["optimizer"], empty)
    if not load_module_only:
        engine.global_steps, engine.global_samples = state["global_steps"], state["global_samples"]
        engine.skipped_steps = state["skipped_steps"]
        scaler = state["loss_scaler"]
        if scaler["type"] == type(engine.loss_scaler).__name__:
            engine.loss_scaler.load_state_dict(scaler["state"])
        if load_lr_scheduler_states and engine.lr_scheduler is not None and state["lr_scheduler"] is not None:
            engine.lr_scheduler.load_state_dict(state["lr_scheduler"])
    barrier(engine, "load_checkpoint (done)")
    return path, state["client_state"]
