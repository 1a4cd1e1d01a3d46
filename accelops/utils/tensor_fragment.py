"""DeepSpeed's ``safe_get_full_*`` / ``safe_set_full_*`` (``deepspeed.utils``): the full fp32 value, gradient
and optimizer state of a parameter however the engine shards it.

How a parameter is found, DeepSpeed's way: DeepSpeed's engine sets attributes on every parameter it
manages (``_z3_optimizer`` at ZeRO-3, ``_hp_mapping`` at stages 1-2) and these functions read them. The
accelops engine sets one attribute, ``param._accelops_link`` (:func:`link_params`, called by
``DeepSpeedEngine.__init__`` on every parameter of the model after wrapping): the engine's optimizer (a weak
reference) and the tensor that optimizer holds for the parameter, which is the parameter itself, or with
ZeRO stages 1-3 and an accelops kernel optimizer (CPU Adam, ...) its local shard
(:mod:`accelops.runtime.parallel`). A parameter without it (not given to an engine) gets None from the
getters, as in DeepSpeed.

Values: accelops keeps the parameters themselves in fp32 (they are the master weights), so the "fp32
param" is the parameter's full value. With ZeRO stages 1-3 a parameter is an FSDP2 DTensor and its full
value is gathered (``full_tensor()``); with stage 0 it is already full. Read parameters between steps
(after ``backward`` or ``step``): between a stage 1/2 forward and its backward, FSDP2 swaps the model's
parameters for unsharded copies, which the engine never saw.

Collectives: a getter of a sharded parameter (or of its gradient or state) gathers the shards, so every rank
must call it, for the same parameters in the same order (DeepSpeed's all-reduce asks the same). Setters
are local: each rank copies its part of ``value``, so every rank must pass the same full value. ``value``
needs the parameter's number of elements (DeepSpeed flattens it); it is reshaped to the parameter's shape.

Differences, on purpose: DeepSpeed returns None at stage 0 (no fp32 copy exists there); accelops returns the
value at every stage. The optimizer state exists only once the optimizer has stepped (torch creates it
lazily; DeepSpeed's ZeRO creates it at start-up): asking for it before, or for a key the optimizer does not
keep, is a KeyError naming the keys there are. ``safe_set_full_grad`` on a parameter without a gradient
gives it one (DeepSpeed does so at ZeRO-3).
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = ["link_params", "safe_get_full_fp32_param", "safe_get_full_grad", "safe_get_full_optimizer_state",
           "safe_set_full_fp32_param", "safe_set_full_grad", "safe_set_full_optimizer_state"]

LINK_ATTRIBUTE = "_accelops_link"


class _Link:
    """What the engine records on a parameter: its optimizer (weakly), the tensor that optimizer holds for
    it, and the (module, attribute name) slots that hold the parameter (weakly; ``GatheredParameters``
    swaps a full copy into them)."""

    __slots__ = ("optimizer_ref", "key", "owners")

    def __init__(self, optimizer: Any = None, key: Any = None, owners: Tuple[Tuple[Any, str], ...] = ()) -> None:
        self.optimizer_ref = None if optimizer is None else weakref.ref(optimizer)
        self.key = key
        self.owners = owners

    def optimizer(self) -> Any:
        return None if self.optimizer_ref is None else self.optimizer_ref()

    def owner_slots(self) -> List[Tuple[Any, str]]:
        """(module, attribute name) of every live module that holds the parameter."""
        return [(module, name) for module, name in ((ref(), name) for ref, name in self.owners) if module is not None]

    def __reduce__(self):
        return _no_link, ()  # a pickled or deep-copied parameter belongs to no engine


def _no_link() -> None:
    return None


def link_params(model: Any, optimizer: Any = None, held: Iterable[Tuple[Any, Any]] = ()) -> None:
    """Record the engine's ``optimizer`` and the owning module slots on every parameter of ``model``
    (module docstring); ``held``: (parameter, the tensor ``optimizer`` holds for it) for each parameter it
    updates. Called by the engine after wrapping."""
    held_for = {id(param): key for param, key in held}
    owners: Dict[int, List[Tuple[Any, str]]] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append((weakref.ref(module), name))
    for param in model.parameters():
        key = held_for.get(id(param))
        setattr(param, LINK_ATTRIBUTE, _Link(optimizer if key is not None else None, key,
                                             tuple(owners.get(id(param), ()))))


def _link(param: Any) -> Optional[_Link]:
    return getattr(param, LINK_ATTRIBUTE, None)


def _check_tensor(what: str, value: Any) -> None:
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got a {type(value).__name__}")


def _is_dtensor(tensor: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def _gathered(tensor: Any) -> Any:
    """A new full tensor: a DTensor's shards gathered onto its mesh's device, or a plain tensor's copy."""
    import torch

    with torch.no_grad():
        if _is_dtensor(tensor):
            return tensor.full_tensor()
        return tensor.detach().clone()


def _gathered_from_local(local: Any, like: Any) -> Any:
    """The full tensor whose shard on this rank is ``local``, sharded as the DTensor ``like`` (a collective)."""
    import torch
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        on_mesh = local.detach().to(like.device_mesh.device_type)
        return DTensor.from_local(on_mesh, like.device_mesh, like.placements, shape=like.shape,
                                  stride=like.stride()).full_tensor()


def _full_value(param: Any, value: Any, what: str) -> Any:
    """``value`` (a tensor with ``param``'s number of elements) shaped like ``param``."""
    _check_tensor(what, value)
    if value.numel() != param.numel():
        raise ValueError(f"{what} has {value.numel()} elements (shape {tuple(value.shape)}), but the parameter has "
                         f"{param.numel()} (shape {tuple(param.shape)})")
    return value.detach().reshape(param.shape)


def _local_part(like: Any, value: Any) -> Any:
    """This rank's part of the full ``value`` when sharded as the DTensor ``like`` (no communication)."""
    from torch.distributed.tensor import distribute_tensor

    mesh = like.device_mesh
    return distribute_tensor(value.to(mesh.device_type), mesh, like.placements, src_data_rank=None).to_local()


def _copy_full_into(target: Any, param: Any, value: Any) -> None:
    """Copy the full ``value`` into ``target``: a DTensor sharded like ``param`` (its local shard gets its
    part), a plain tensor holding ``param``'s local shard, or a plain full tensor."""
    import torch

    with torch.no_grad():
        if _is_dtensor(target):
            target.to_local().copy_(_local_part(target, value))
        elif _is_dtensor(param):
            target.copy_(_local_part(param, value).reshape(target.shape))
        else:
            target.copy_(value)


# ---------------------------------------------------------------------------------------------- parameters
def safe_get_full_fp32_param(param: Any) -> Optional[Any]:
    """The full fp32 value of ``param`` (a new tensor, on the device its shards live on), or None when no
    engine manages ``param``. A collective for a sharded parameter (module docstring)."""
    _check_tensor("param", param)
    if _link(param) is None:
        return None
    return _gathered(param)


def safe_set_full_fp32_param(param: Any, value: Any) -> None:
    """Set ``param`` (managed by an engine; otherwise nothing happens, as in DeepSpeed) to the full ``value``:
    each rank copies its part into its shard, which is also what the optimizer updates. Not a collective;
    every rank must pass the same value. ValueError when ``value``'s number of elements differs."""
    _check_tensor("param", param)
    if _link(param) is None:
        return
    _copy_full_into(param, param, _full_value(param, value, "value"))


# ---------------------------------------------------------------------------------------------- gradients
def safe_get_full_grad(param: Any) -> Optional[Any]:
    """The full gradient of ``param`` as the last backward left it (reduced over the ranks after a
    synchronising backward; with fp16 still multiplied by the loss scale; None before a backward and after
    ``step``, which clears gradients). A plain gradient is returned itself (as DeepSpeed); a sharded one is
    gathered into a new tensor, a collective."""
    _check_tensor("param", param)
    grad = param.grad
    if grad is None:
        return None
    return _gathered(grad) if _is_dtensor(grad) else grad


def safe_set_full_grad(param: Any, value: Any) -> None:
    """Set the gradient of ``param`` to the full ``value`` (each rank copies its part into its gradient
    shard; a parameter without a gradient gets one). Not a collective; every rank must pass the same value.
    ValueError when ``value``'s number of elements differs."""
    import torch

    _check_tensor("param", param)
    full = _full_value(param, value, "value")
    if param.grad is not None:
        _copy_full_into(param.grad, param, full)
        return
    with torch.no_grad():
        if _is_dtensor(param):
            from torch.distributed.tensor import DTensor

            local = _local_part(param, full).to(param.to_local().device, param.dtype)
            param.grad = DTensor.from_local(local, param.device_mesh, param.placements, shape=param.shape,
                                            stride=param.stride())
        else:
            param.grad = full.to(param.device, param.dtype).clone()


# ---------------------------------------------------------------------------------------------- optimizer state
def _state_of(param: Any, optim_state_key: Any) -> Optional[Tuple[_Link, dict]]:
    """(link, the optimizer's state dict for ``param``), None when no engine's optimizer updates it;
    KeyError when the state has no ``optim_state_key``."""
    _check_tensor("param", param)
    link = _link(param)
    optimizer = None if link is None else link.optimizer()
    if optimizer is None:
        return None
    state = optimizer.state.get(link.key)
    if not state:
        raise KeyError(f"the optimizer ({type(optimizer).__name__}) has no state for this parameter yet: it creates "
                       f"its state at its first step")
    if optim_state_key not in state:
        raise KeyError(f"the optimizer ({type(optimizer).__name__}) keeps no {optim_state_key!r} for this parameter; "
                       f"its state keys: {sorted(map(str, state))}")
    return link, state


def safe_get_full_optimizer_state(param: Any, optim_state_key: Any) -> Optional[Any]:
    """The full value of the optimizer state ``optim_state_key`` (``"exp_avg"``, ``"exp_avg_sq"``, ...) of
    ``param``, a new tensor; None when no engine's optimizer updates ``param``. KeyError before the
    optimizer's first step or for a key it does not keep. A collective for a sharded parameter."""
    found = _state_of(param, optim_state_key)
    if found is None:
        return None
    link, state = found
    value = state[optim_state_key]
    import torch

    if not isinstance(value, torch.Tensor):
        return value
    if not _is_dtensor(value) and link.key is not param and value.shape == link.key.shape:
        return _gathered_from_local(value, param)  # a kernel optimizer's state of the local shard
    return _gathered(value)


def safe_set_full_optimizer_state(param: Any, value: Any, optim_state_key: Any) -> None:
    """Set the optimizer state ``optim_state_key`` of ``param`` to the full ``value`` (each rank copies its
    part); nothing happens when no engine's optimizer updates ``param``. KeyError before the optimizer's first
    step or for a key it does not keep; ValueError when ``value``'s number of elements differs. Not a
    collective; every rank must pass the same value."""
    found = _state_of(param, optim_state_key)
    if found is None:
        return
    target = found[1][optim_state_key]
    _check_tensor(f"the optimizer state {optim_state_key!r}", target)
    _copy_full_into(target, param, _full_value(param, value, "value"))
