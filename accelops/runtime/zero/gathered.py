"""``deepspeed.zero.GatheredParameters``: full parameters inside a block, changes written back on exit.

Two kinds of sharded parameters are gathered:

* a zero parameter (built inside ``zero.Init``, not yet given to ``initialize``): the parameter object
  itself gets its full data inside the block (DeepSpeed's behaviour);
* a parameter of an engine at ZeRO stage 1-3 (an FSDP2 DTensor): each module attribute that holds it
  (``module.weight``) holds a full plain ``Parameter`` inside the block and the sharded one again after.
  Reach the parameter through its module inside the block; a reference taken before the block is still the
  sharded parameter. Do not run the model's forward inside the block.

On exit, with ``modifier_rank``, that rank's full values (changed or not) are broadcast and become every
rank's shards; without it, changes are dropped. Other tensors (not sharded) are left alone and, when no
given tensor is sharded, the block does nothing (DeepSpeed: a no-op). Every rank must enter the block with
the same parameters in the same order (gathering is a collective); duplicates count once. A parameter
already gathered by an enclosing block is a RuntimeError, as in DeepSpeed.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch

from ...utils.tensor_fragment import _copy_full_into, _gathered, _is_dtensor, _link
from .zero_param import ZeroParamStatus, gather, is_zero_param, release


def _as_list(params: Any) -> List[Any]:
    if isinstance(params, torch.Tensor):
        return [params]
    if params is None:
        return []
    try:
        items = list(params)
    except TypeError:
        raise TypeError(f"GatheredParameters(params=...) takes a parameter or an iterable of parameters, got a "
                        f"{type(params).__name__}") from None
    unique, seen = [], set()
    for item in items:
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"GatheredParameters(params=...): expected parameters, got a {type(item).__name__}")
        if id(item) not in seen:
            seen.add(id(item))
            unique.append(item)
    return unique


def _check_rank(modifier_rank: Optional[int]) -> None:
    if modifier_rank is None:
        return
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_initialized() else 1
    if not isinstance(modifier_rank, int) or isinstance(modifier_rank, bool) or not 0 <= modifier_rank < world:
        raise ValueError(f"GatheredParameters(modifier_rank={modifier_rank!r}): expected None or a rank in "
                         f"[0, {world})")


class _EngineParam:
    """A DTensor parameter of an engine, swapped for a full copy in the modules that hold it."""

    def __init__(self, param: torch.Tensor) -> None:
        self.param = param
        self.slots = _link(param).owner_slots()
        if not self.slots:
            raise RuntimeError("GatheredParameters: a sharded parameter whose module is gone (or was replaced after "
                               "initialize()) cannot be gathered")
        self.full = torch.nn.Parameter(_gathered(param), requires_grad=param.requires_grad)
        for module, name in self.slots:
            module._parameters[name] = self.full

    def restore(self, modifier_rank: Optional[int]) -> None:
        import torch.distributed as dist

        if modifier_rank is not None:
            with torch.no_grad():
                dist.broadcast(self.full.data, src=modifier_rank)
            _copy_full_into(self.param, self.param, self.full.data)
        for module, name in self.slots:
            module._parameters[name] = self.param


class GatheredParameters:
    """DeepSpeed's context manager (module docstring). ``params``: a parameter or an iterable of them;
    ``modifier_rank``: None or the rank whose values are kept; ``fwd_module``: accepted for DeepSpeed's
    signature (FSDP2 gathers what a forward uses, no registration is needed); ``enabled=False``: nothing."""

    def __init__(self, params: Any, modifier_rank: Optional[int] = None, fwd_module: Any = None,
                 enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        self.modifier_rank = modifier_rank
        self._zero: List[torch.Tensor] = []
        self._engine: List[Any] = []
        if not self.enabled:
            return
        _check_rank(modifier_rank)
        given = _as_list(params)
        self._zero = sorted((p for p in given if is_zero_param(p)), key=lambda p: p.ds_id)
        self._sharded = [p for p in given if _is_dtensor(p) and _link(p) is not None]

    def __enter__(self) -> "GatheredParameters":
        if not self.enabled:
            return self
        busy = [p.ds_id for p in self._zero if p.ds_status == ZeroParamStatus.AVAILABLE]
        if busy:
            raise RuntimeError(f"GatheredParameters: parameters {busy} (ds_id) are already gathered by an enclosing "
                               f"block; nested blocks cannot gather the same parameter")
        gather(self._zero)
        self._engine = [_EngineParam(p) for p in self._sharded]
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled:
            return
        release(self._zero, self.modifier_rank)
        for swapped in self._engine:
            swapped.restore(self.modifier_rank)
        self._engine = []
