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

Atomicity: every rank writes into ``<save_dir>/.<tag>.partial``; when all ranks are done, rank 0 renames it
to ``<tag>`` and then replaces ``latest`` (written to ``latest.tmp`` first), so a save killed midway
leaves the previous checkpoint and ``latest`` untouched. Re-saving an existing tag swaps the folders
(the old one is removed only after the new one is in place). A shared filesystem is assumed.

Before writing, the ranks meet at a barrier with a timeout (``ACCELOPS_CHECKPOINT_TIMEOUT`` seconds,
default 300): a rank that never calls save makes the others fail with a message saying so, instead of
waiting for the process group's timeout. ``engine_state.pt`` is read with ``torch.load(weights_only=False)``
(the client state may hold any object): load only checkpoints you trust, as with DeepSpeed.
"""
from __future__ import annotations

import logging
import os
import shutil
from datetime import timedelta
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from .optimizers import optimizer_params
from .parallel import model_param_names

logger = logging.getLogger(__name__)
ENGINE_STATE = "engine_state.pt"
FORMAT = "accelops-engine-checkpoint/1"
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
    if sharded is None or not torch.is_tensor(value) or value.dim() == 0:
        return value
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(value, sharded.device_mesh, sharded.placements, run_check=False,
                              shape=sharded.shape, stride=sharded.stride())


def _optimizer_names(engine: Any) -> List[Tuple[str, Any]]:
    """(param name, sharded DTensor when the optimizer holds its local shard, else None) per optimizer param."""
    parallel = engine._parallel
    if parallel.bound:
        return [(name, sharded if parallel.local_pairs else None) for name, sharded in parallel.bound]
    names = model_param_names(engine.module)
    found = []
    for i, param in enumerate(optimizer_params(engine.optimizer)):
        if id(param) not in names:
            raise ValueError(f"optimizer param {i} (shape {tuple(param.shape)}) is not a parameter of the model, so "
                             f"it has no name to checkpoint it under")
        found.append((names[id(param)], None))
    return found


def _model_state(engine: Any, exclude_frozen: bool = False) -> Dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(engine.module)
    if exclude_frozen:
        frozen = {name for name, param in engine.module.named_parameters() if not param.requires_grad}
        state = {k: v for k, v in state.items() if k not in frozen}
    return state


def _optimizer_state(engine: Any) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(DCP tensors ``optim.<name>::<key>``, pickled part: group settings and non-tensor state)."""
    optimizer = engine.optimizer
    tensors: Dict[str, torch.Tensor] = {}
    scalars: Dict[str, Dict[str, Any]] = {}
    for param, (name, sharded) in zip(optimizer_params(optimizer), _optimizer_names(engine)):
        for key, value in optimizer.state.get(param, {}).items():
            if torch.is_tensor(value):
                tensors[f"optim.{name}::{key}"] = _global(value, sharded)
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
def _check_tag(tag: Any) -> str:
    tag = str(tag)
    if not tag or tag in (".", "..") or tag.startswith(".") or "/" in tag or os.sep in tag or tag == "latest":
        raise ValueError(f"checkpoint tag {tag!r} must be a plain folder name (not empty, no path separator, not "
                         f"starting with '.', not 'latest')")
    return tag


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
    tag = _check_tag(f"global_step{engine.global_steps}" if tag is None else tag)
    save_dir = os.fspath(save_dir)
    barrier(engine, f"save_checkpoint(tag={tag!r})")
    _same_on_every_rank(engine, "the checkpoint tag", tag)
    final, partial = os.path.join(save_dir, tag), os.path.join(save_dir, f".{tag}.partial")
    if engine.global_rank == 0:
        os.makedirs(save_dir, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
    barrier(engine, "save_checkpoint (folder creation)")
    import torch.distributed.checkpoint as dcp

    tensors = {f"model.{k}": v for k, v in _model_state(engine, exclude_frozen_parameters).items()}
    optimizer_meta = None
    if engine.optimizer is not None:
        optimizer_tensors, optimizer_meta = _optimizer_state(engine)
        tensors.update(optimizer_tensors)
    # Replicated entries (buffers, DDP's parameters) are written by rank 0, as DeepSpeed saves rank 0's module
    # state: DCP would otherwise spread them over the ranks, mixing ranks whose buffers differ (BatchNorm).
    dcp.save(tensors, checkpoint_id=partial, planner=dcp.DefaultSavePlanner(dedup_save_to_lowest_rank=True))
    if engine.global_rank == 0:
        torch.save(_engine_state(engine, optimizer_meta, client), os.path.join(partial, ENGINE_STATE))
    barrier(engine, "save_checkpoint (writing)")
    if engine.global_rank == 0:
        _commit(save_dir, tag, partial, final, save_latest)
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


def _commit(save_dir: str, tag: str, partial: str, final: str, save_latest: bool) -> None:
    """Rank 0: put the finished folder in place, then point ``latest`` at it."""
    old = os.path.join(save_dir, f".{tag}.old")
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.rename(final, old)
    os.rename(partial, final)
    shutil.rmtree(old, ignore_errors=True)
    if save_latest:
        latest_tmp = os.path.join(save_dir, "latest.tmp")
        with open(latest_tmp, "w") as handle:
            handle.write(tag)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(latest_tmp, os.path.join(save_dir, "latest"))


# ---------------------------------------------------------------------------------------------- load
def _resolve(load_dir: str, tag: Any) -> Optional[str]:
    """The checkpoint folder to load, or None (logged) when there is none."""
    if tag is None:
        latest = os.path.join(load_dir, "latest")
        if not os.path.isfile(latest):
            logger.warning("Unable to find latest file at %s, if trying to load latest checkpoint please ensure this "
                           "file exists or pass an explicit checkpoint tag when loading a checkpoint.", latest)
            return None
        with open(latest) as handle:
            tag = handle.read().strip()
    path = os.path.join(load_dir, str(tag))
    if not os.path.isfile(os.path.join(path, ENGINE_STATE)):
        logger.warning("Client provided checkpoint load path: %s does not exist (or is not an accelops checkpoint: "
                       "no %s) ... skip checkpoint load", path, ENGINE_STATE)
        return None
    return path


def _check_model_keys(expected: Dict[str, Any], saved: set, strict: bool) -> Dict[str, Any]:
    missing = sorted(k for k in expected if f"model.{k}" not in saved)
    if strict:
        names = {k[len("model."):] for k in saved if k.startswith("model.")}
        unexpected = sorted(names - set(expected))
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
        if key.startswith("optim."):
            have.setdefault(key.split("::")[0], []).append(key)
    template, empty = {}, []
    for param, (name, _) in zip(optimizer_params(engine.optimizer), _optimizer_names(engine)):
        keys, found = sorted(wanted.get(f"optim.{name}", [])), sorted(have.get(f"optim.{name}", []))
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
    path = _resolve(os.fspath(load_dir), tag)
    if path is None:
        return None, None
    barrier(engine, f"load_checkpoint({path!r})")
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state = torch.load(os.path.join(path, ENGINE_STATE), map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RuntimeError(f"load_checkpoint: {path} is not an accelops engine checkpoint ({ENGINE_STATE} has no "
                           f"format {FORMAT!r})")
    saved = set(FileSystemReader(path).read_metadata().state_dict_metadata)
    model = _check_model_keys(_model_state(engine), saved, load_module_strict)
    template = {f"model.{k}": v for k, v in model.items()}
    with_optimizer = (load_optimizer_states and not load_module_only and engine.optimizer is not None
                      and state["optimizer"] is not None)
    empty: List[Any] = []
    if with_optimizer:
        optimizer_tensors, empty = _optimizer_template(engine, saved)
        template.update(optimizer_tensors)
    dcp.load(template, checkpoint_id=path)
    set_model_state_dict(engine.module, {k: template[f"model.{k}"] for k in model},
                         options=StateDictOptions(strict=False))
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
